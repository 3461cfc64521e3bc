"""The benchmark suite: einc beside onnxruntime (and numpy for sgemm), in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/run.py [--quick] [--cold] [NAME ...]

(the two variables pin older OpenBLAS kernels on this host and slow numpy's
sgemm: unset them in this command only.) Each model is compiled (cold, then
from the cache), checked against onnxruntime and timed with `einc.tools.bench`
(median of interleaved runs after warm-up, all cores for both). Models whose
packages or ops are missing are skipped with the reason. Writes
benchmarks/results/cpu.json, cpu.md (the table for docs/performance.md) and
cpu-ratios.png; with --cold (the caches filled with other data before each timed
run, for every engine: weights from DRAM) cpu-cold.json, cpu-cold.md and
cpu-cold-ratios.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper  # noqa: E402

from einc.tools.bench import bench  # noqa: E402

IR_VERSION = 10


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.save(model, str(path))
    return path


def sgemm(n: int, cache: Path) -> tuple[Path, dict, dict]:
    """C = A @ B with both operands inputs (packed at run time, as numpy's are)."""
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        f"sgemm{n}",
        [helper.make_tensor_value_info("a", f, [n, n]), helper.make_tensor_value_info("b", f, [n, n])],
        [helper.make_tensor_value_info("c", f, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((n, n)).astype(np.float32) for k in "ab"}
    return _save(model, cache / f"sgemm{n}.onnx"), feeds, {"numpy": lambda: feeds["a"] @ feeds["b"]}


def mlp(cache: Path) -> tuple[Path, dict, dict]:
    sys.path.insert(0, str(ROOT / "examples"))
    from make_models import main as make_models

    make_models(str(cache))
    return cache / "mlp.onnx", None, {}


def _torch_export(module: Any, args: tuple, names: list[str], path: Path) -> Path:
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names, opset_version=17, dynamo=False)
    return _save(onnx.load(str(path)), path)


def encoder(cache: Path) -> tuple[Path, dict, dict]:
    """One post-norm transformer encoder block: d_model 256, 4 heads, FFN 1024, GELU, sequence 128."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int = 256, heads: int = 4, ffn: int = 1024):
            super().__init__()
            self.heads = heads
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff1, self.ff2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, s, d)
            x = self.ln1(x + self.proj(y))
            return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    torch.manual_seed(0)
    return _torch_export(Block(), (torch.randn(1, 128, 256),), ["x"], cache / "encoder.onnx"), None, {}


def resnet18(cache: Path) -> tuple[Path, dict, dict]:
    """ResNet-18's shape (torchvision's layers, built from torch.nn) at 1x3x224x224."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))
    return _torch_export(net, (torch.randn(1, 3, 224, 224),), ["x"], cache / "resnet18.onnx"), None, {}


def _real(builder: str, *args: Any) -> Callable[[Path], tuple[Path, dict, dict]]:
    """A model from tests/models/exporters (real weights shipped in pip packages)."""

    def build(cache: Path) -> tuple[Path, dict, dict]:
        from tests.models import exporters

        model = getattr(exporters, builder)(*args, cache)
        return model.path, {"feeds": model.feeds, "shapes": model.input_shapes}, {}

    return build


SUITE: dict[str, Callable[[Path], tuple[Path, Any, dict]]] = {
    "sgemm 1024^3": lambda c: sgemm(1024, c),
    "sgemm 2048^3": lambda c: sgemm(2048, c),
    "MLP 784-1024-1024-10, batch 64": mlp,
    "encoder block d256 h4 s128": encoder,
    "ResNet-18 shape 224x224": resnet18,
    "all-MiniLM-L6-v2": _real("minilm"),
    "GPT-2 tiny": _real("gpt2"),
    "Silero VAD": _real("silero_vad", "silero_vad"),
    "PP-OCRv4 det": _real("ppocr", "det"),
}
RUNS = {"sgemm 2048^3": 20, "ResNet-18 shape 224x224": 30, "PP-OCRv4 det": 30}


def machine() -> str:
    import llvmlite.binding as llvm
    import onnxruntime

    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')}, {i['num_threads']} threads)" for i in threadpool_info())
    except ImportError:
        blas = "unknown"
    return (
        f"{os.cpu_count()} cores, LLVM CPU '{llvm.get_host_cpu_name()}', {platform.machine()}, "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__} with {blas}"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in results.items() if "ratio" in r]
    ratios = [results[n]["ratio"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(names[::-1], ratios[::-1], color=["tab:green" if r <= 1 else "tab:red" for r in ratios[::-1]])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("latency einc / onnxruntime (lower is better; 1 = parity)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict[str, Any]) -> str:
    rows = [
        "| model | GFLOP | einc | onnxruntime | numpy | einc / ort | einc GFLOP/s | compile cold / cached | max rel. diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        if "skipped" in r:
            rows.append(f"| {name} | | | | | skipped: {r['skipped']} | | | |")
            continue
        t = r["median_s"]
        ms = lambda e: f"{t[e] * 1e3:.3f} ms" if e in t else ""  # noqa: E731
        rows.append(
            f"| {name} | {r['gflop']:.3f} | {ms('einc')} | {ms('onnxruntime')} | {ms('numpy')} | {r.get('ratio', float('nan')):.2f} "
            f"| {r['gflops']['einc']:.0f} | {r['compile_cold_s']:.2f} s / {r['compile_cached_s'] * 1e3:.0f} ms | {r.get('max_rel_diff', 0):.1e} |"
        )
    ratios = [r["ratio"] for r in results.values() if "ratio" in r]
    if ratios:
        rows.append("")
        rows.append(f"Geometric mean of einc / onnxruntime over {len(ratios)} models: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="substrings of suite names to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the runs")
    parser.add_argument("--out", default=str(HERE / "results"), help="where results go")
    parser.add_argument("--cold", action="store_true", help="caches filled with other data before each timed run (cpu-cold.*)")
    args = parser.parse_args()
    stem = "cpu-cold" if args.cold else "cpu"
    out = Path(args.out)
    results: dict[str, Any] = {}
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for name, build in SUITE.items():
            if args.names and not any(s.lower() in name.lower() for s in args.names):
                continue
            try:
                path, extra_feeds, extra = build(cache)
            except Exception as err:  # a missing package or a model einc cannot build yet
                results[name] = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"}
                print(f"{name}: skipped ({results[name]['skipped']})", flush=True)
                continue
            feeds = shapes = None
            if isinstance(extra_feeds, dict) and "feeds" in extra_feeds:
                feeds, shapes = extra_feeds["feeds"], extra_feeds["shapes"]
            elif extra_feeds:
                feeds = extra_feeds
            runs = max(10, RUNS.get(name, 100) // (10 if args.quick else 1))
            try:
                results[name] = bench(path, shapes, feeds, extra=extra, runs=runs, warmup=max(2, runs // 10), cold=args.cold)
            except Exception as err:
                results[name] = {"skipped": f"einc: {type(err).__name__}: {str(err).splitlines()[0][:120]}"}
                traceback.print_exc(limit=2)
            r = results[name]
            print(f"{name}: {r.get('skipped') or ', '.join(f'{k} {v * 1e3:.3f} ms' for k, v in r['median_s'].items())}"
                  + (f", ratio {r['ratio']:.2f}" if "ratio" in r else ""), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine(), "cold": args.cold, "results": results}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table(results))
    try:
        plot(results, out / f"{stem}-ratios.png")
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plot")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
