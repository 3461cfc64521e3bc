"""GPU benchmark: einc's Triton target against PyTorch on the same GPU, in one run.

    python benchmarks/gpu.py --out gpu.json                 # everything (an H100: about 10-15 min)
    python benchmarks/gpu.py --only matmul,attention        # some groups
    TRITON_INTERPRET=1 python benchmarks/gpu.py --smoke     # tiny sizes, Triton's CPU interpreter

Groups (the targets of the Triton backend's issue in brackets):
  matmul     fp16 and bf16 4096^3 against torch.matmul (cuBLAS)            [>= 80% of its TFLOP/s]
  attention  batch 4, 16 heads, seq 1k/4k/8k, head dim 64/128, causal and
             not, against scaled_dot_product_attention's flash backend    [>= SDPA at 4k and 8k]
  norms      LayerNorm and softmax on 8192x4096 fp16 against torch, with
             the bandwidth of a plain device copy                          [>= 75% of the copy's]
  models     a transformer block, GPT-2 tiny and MiniLM (random weights,
             fp16) against torch eager and torch.compile                  [< eager, within 10% of compile]

Each case is checked against PyTorch's result; any mismatch is printed and the
run exits 1 (after writing the JSON). A case einc cannot compile or run is
printed as an error and the run exits 2. Times are medians of
`triton.testing.do_bench` (L2 flushed between runs); einc's models are also
timed replayed from a CUDA graph, which removes Python's per-kernel launch cost.
Single-op models are compiled as one group of the kind the fusion pass would
give them (`compile_for_triton(..., group=kind)`); whole models go through the
target's own pipeline.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


@dataclass
class Result:
    group: str
    case: str
    metric: str
    """What `einc` and `reference` measure: TFLOP/s, GB/s or ms."""
    einc: float | None = None
    reference: dict[str, float] = field(default_factory=dict)
    """The same metric for each PyTorch variant (and a copy, for bandwidth)."""
    ratio: float | None = None
    """einc's over the first reference's, oriented so that higher is better for einc."""
    einc_ms: float | None = None
    reference_ms: dict[str, float] = field(default_factory=dict)
    error: float | None = None
    """Largest |einc - torch| over the largest |torch|."""
    tolerance: float | None = None
    compile_s: float | None = None
    first_run_s: float | None = None
    """The first run: Triton compiles and autotunes every kernel."""
    notes: str = ""
    status: str = "ok"
    """ok, MISMATCH, ERROR or SKIPPED (a model's optional package is missing)."""


class Bench:
    """Shared state: the device, the timer, sizes (full or smoke), results."""

    def __init__(self, smoke: bool):
        import torch

        self.torch = torch
        self.smoke = smoke
        self.device = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
        self.results: list[Result] = []

    def time_ms(self, fn: Callable[[], Any]) -> float:
        if self.device == "cuda":
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def compare(self, result: Result, got: Any, want: Any, tolerance: float) -> None:
        got, want = got.float(), want.float()
        scale = max(want.abs().max().item(), 1e-6)
        finite = bool(self.torch.isfinite(got).all()) == bool(self.torch.isfinite(want).all())
        result.error = float((got - want).abs().nan_to_num(float("inf")).max().item() / scale)
        result.tolerance = tolerance
        if tolerance != math.inf and (not finite or not result.error <= tolerance):
            result.status = "MISMATCH"

    def compile(self, result: Result, proto: Any, group: str | None = None) -> Any:
        import einc
        from einc.backends.triton.target import compile_for_triton
        from einc.frontend.onnx import import_model

        start = time.perf_counter()
        model = einc.compile(proto, target="triton") if group is None else compile_for_triton(import_model(proto), group)
        result.compile_s = time.perf_counter() - start
        return model

    def first_run(self, result: Result, model: Any, feeds: dict[str, Any]) -> Any:
        start = time.perf_counter()
        out = model.run(feeds)
        self.sync()
        result.first_run_s = time.perf_counter() - start
        return out


@contextmanager
def case(b: Bench, result: Result, quiet: bool = False) -> Iterator[Result]:
    """One benchmark case: recorded, and on an exception marked ERROR while the run goes on."""
    b.results.append(result)
    try:
        yield result
    except ImportError as err:  # an optional package of a model (transformers)
        result.status, result.notes = "SKIPPED", f"needs {err.name}: pip install {err.name}"
    except Exception as err:  # noqa: BLE001 - reported, the run goes on
        result.status = "ERROR"
        result.notes = f"{type(err).__name__}: {str(err)[:400]}"
        traceback.print_exc()
    if not quiet or result.status != "ok":
        print(report([result]).splitlines()[2], flush=True)


# -- ONNX models built in memory ------------------------------------------------------


def _onnx_type(dtype: Any) -> int:
    from onnx import TensorProto

    return {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16, "float32": TensorProto.FLOAT}[str(dtype).replace("torch.", "")]


def _model(nodes: list, inputs: dict[str, tuple[list[int], int]], outputs: dict[str, int], inits: dict[str, np.ndarray]) -> Any:
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info(n, t, s) for n, (s, t) in inputs.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _np_dtype(name: str) -> Any:
    import ml_dtypes

    return {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}[name]


# -- matmul ------------------------------------------------------------------------------


def bench_matmul(b: Bench) -> None:
    torch = b.torch
    n = 64 if b.smoke else 4096
    for name in ("float16", "bfloat16"):
        with case(b, Result("matmul", f"{name} {n}^3", "TFLOP/s")) as result:
            dtype = getattr(torch, name)
            proto = _model([_node("MatMul", ["a", "b"], ["y"])], {"a": ([n, n], _onnx_type(name)), "b": ([n, n], _onnx_type(name))},
                           {"y": _onnx_type(name)}, {})
            model = b.compile(result, proto)
            a = torch.randn(n, n, device=b.device, dtype=dtype)
            w = torch.randn(n, n, device=b.device, dtype=dtype)
            feeds = {"a": a, "b": w}
            got = b.first_run(result, model, feeds)["y"]
            interpreted_bf16 = b.device == "cpu" and name == "bfloat16"
            if interpreted_bf16:  # Triton's CPU interpreter multiplies bf16 tiles wrongly (tl.dot); a GPU does not
                result.notes = "not checked: the CPU interpreter's bf16 tl.dot is wrong"
            b.compare(result, got, torch.matmul(a.float(), w.float()) if b.device == "cpu" else torch.matmul(a, w),
                      math.inf if interpreted_bf16 else 1e-2)
            flops = 2 * n**3
            result.einc_ms = b.time_ms(lambda: model.run(feeds))
            result.reference_ms["torch.matmul"] = b.time_ms(lambda: torch.matmul(a, w))
            _rates(result, flops / 1e12)
            result.notes = "; ".join(filter(None, [result.notes, *model.tuned().values()]))


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> Any:
    from onnx import helper

    return helper.make_node(op, inputs, outputs, **attrs)


def _rates(result: Result, work: float) -> None:
    """Rates (work per second) from times; ratio einc / first reference."""
    result.einc = work / (result.einc_ms / 1e3) if result.einc_ms else None
    result.reference = {k: work / (ms / 1e3) for k, ms in result.reference_ms.items()}
    first = next(iter(result.reference.values()), None)
    result.ratio = result.einc / first if result.einc and first else None


# -- attention -------------------------------------------------------------------------------


def attention_model(batch: int, heads: int, seq: int, dim: int, causal: bool, dtype: str) -> Any:
    """softmax(Q K^T / sqrt(d) + mask) V from Q, K, V of shape [batch, heads, seq, dim]."""
    t = _onnx_type(dtype)
    np_dtype = _np_dtype(dtype)
    inits = {"scale": np.array(1 / math.sqrt(dim), np_dtype)}
    nodes = [
        _node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        _node("MatMul", ["q", "kt"], ["s"]),
        _node("Mul", ["s", "scale"], ["scaled"]),
    ]
    scores = "scaled"
    if causal:
        inits["mask"] = np.triu(np.full((seq, seq), -np.inf, np.float32), 1).astype(np_dtype)
        nodes.append(_node("Add", ["scaled", "mask"], ["masked"]))
        scores = "masked"
    nodes += [_node("Softmax", [scores], ["p"], axis=-1), _node("MatMul", ["p", "v"], ["o"])]
    shape = [batch, heads, seq, dim]
    return _model(nodes, {n: (shape, t) for n in "qkv"}, {"o": t}, inits)


def bench_attention(b: Bench) -> None:
    torch = b.torch
    import torch.nn.functional as F

    batch, heads = (1, 2) if b.smoke else (4, 16)
    seqs = (64, 128) if b.smoke else (1024, 4096, 8192)
    dims = (16, 32) if b.smoke else (64, 128)
    for seq in seqs:
        for dim in dims:
            for causal in (False, True):
                with case(b, Result("attention", f"fp16 s={seq} d={dim}" + (" causal" if causal else ""), "TFLOP/s")) as result:
                    proto = attention_model(batch, heads, seq, dim, causal, "float16")
                    model = b.compile(result, proto, group="attention")
                    if "m_new = tl.maximum(m_i" not in model.source:
                        raise RuntimeError("attention was not compiled to the one-pass kernel")
                    if model.manifest["arena_bytes"] >= batch * heads * seq * seq * 2:
                        raise RuntimeError("an N x N tensor would be written to GPU memory")
                    result.notes = f"one kernel, arena {model.manifest['arena_bytes']} B"
                    q, k, v = (torch.randn(batch, heads, seq, dim, device=b.device, dtype=torch.float16) for _ in range(3))
                    feeds = {"q": q, "k": k, "v": v}
                    got = b.first_run(result, model, feeds)["o"]
                    sdpa = _sdpa(b, F, q, k, v, causal)
                    want = sdpa() if b.device == "cuda" else F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
                    b.compare(result, got, want, 2e-2)
                    flops = 4 * batch * heads * seq * seq * dim * (0.5 if causal else 1.0)
                    result.einc_ms = b.time_ms(lambda: model.run(feeds))
                    result.reference_ms["sdpa flash"] = b.time_ms(sdpa)
                    _rates(result, flops / 1e12)
                    result.notes = "; ".join([result.notes, *model.tuned().values()])


def _sdpa(b: Bench, F: Any, q: Any, k: Any, v: Any, causal: bool) -> Callable[[], Any]:
    """SDPA pinned to its flash backend (on a GPU)."""
    if b.device != "cuda":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run() -> Any:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


# -- LayerNorm, softmax, copy -------------------------------------------------------------------


def bench_norms(b: Bench) -> None:
    torch = b.torch
    rows, cols = (64, 256) if b.smoke else (8192, 4096)
    dtype = torch.float16
    x = torch.randn(rows, cols, device=b.device, dtype=dtype)
    bytes_moved = 2 * rows * cols * x.element_size()  # read once, write once
    dst = torch.empty_like(x)
    copy_ms = b.time_ms(lambda: dst.copy_(x))
    t = _onnx_type("float16")
    gamma = torch.randn(cols, device=b.device, dtype=dtype)
    beta = torch.randn(cols, device=b.device, dtype=dtype)
    cases = {
        "layernorm": (
            _model([_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)], {"x": ([rows, cols], t)},
                   {"y": t}, {"g": gamma.cpu().numpy(), "b": beta.cpu().numpy()}),
            lambda: torch.nn.functional.layer_norm(x, (cols,), gamma, beta, 1e-5),
        ),
        "softmax": (
            _model([_node("Softmax", ["x"], ["y"], axis=-1)], {"x": ([rows, cols], t)}, {"y": t}, {}),
            lambda: torch.softmax(x, dim=-1),
        ),
    }
    for name, (proto, reference) in cases.items():
        with case(b, Result("norms", f"{name} fp16 {rows}x{cols}", "GB/s")) as result:
            model = b.compile(result, proto, group="rows")
            feeds = {"x": x}
            got = b.first_run(result, model, feeds)["y"]
            want = reference() if b.device == "cuda" else _float_reference(name, x, gamma, beta, cols)
            b.compare(result, got, want, 1e-2)
            result.einc_ms = b.time_ms(lambda: model.run(feeds))
            result.reference_ms["torch"] = b.time_ms(reference)
            result.reference_ms["copy"] = copy_ms
            _rates(result, bytes_moved / 1e9)
            result.notes = f"einc at {result.einc / result.reference['copy']:.0%} of copy bandwidth"


def _float_reference(name: str, x: Any, gamma: Any, beta: Any, cols: int) -> Any:
    import torch

    xf = x.float()
    if name == "softmax":
        return torch.softmax(xf, -1)
    return torch.nn.functional.layer_norm(xf, (cols,), gamma.float(), beta.float(), 1e-5)


# -- whole models ---------------------------------------------------------------------------------


def _block_module(torch: Any, d: int, heads: int, ff: int) -> Any:
    nn = torch.nn

    class Block(nn.Module):
        """A pre-norm transformer encoder block (attention, GELU MLP, residuals)."""

        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

        def forward(self, x: Any) -> Any:
            bsz, seq, _ = x.shape
            h = self.ln1(x)
            split = lambda t: t.reshape(bsz, seq, heads, d // heads).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
            att = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d // heads)), dim=-1) @ v
            x = x + self.o(att.transpose(1, 2).reshape(bsz, seq, d))
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))

    return Block()


def _models(b: Bench) -> dict[str, Callable[[], tuple[Any, dict[str, Any]]]]:
    """Name -> a function making (torch module, example inputs)."""
    torch = b.torch
    batch, seq = (2, 16) if b.smoke else (8, 512)

    def block() -> tuple[Any, dict[str, Any]]:
        d, heads, ff = (32, 2, 64) if b.smoke else (768, 12, 3072)
        return _block_module(torch, d, heads, ff), {"x": torch.randn(batch, seq, d)}

    def gpt2() -> tuple[Any, dict[str, Any]]:
        from transformers import GPT2Config, GPT2Model

        size = dict(n_layer=1, n_head=2, n_embd=32) if b.smoke else dict(n_layer=2, n_head=4, n_embd=256)
        config = GPT2Config(vocab_size=1000, n_positions=max(seq, 64), use_cache=False, attn_implementation="eager", **size)
        ids = torch.randint(0, 1000, (batch, seq))
        # With the attention mask given, transformers builds the causal mask from it (without, it
        # looks for packed sequences with torch.diff, which the TorchScript exporter cannot export).
        return _Wrap(GPT2Model(config)), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def minilm() -> tuple[Any, dict[str, Any]]:
        from transformers import BertConfig, BertModel

        size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64) if b.smoke else dict(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        config = BertConfig(vocab_size=30522, max_position_embeddings=512, attn_implementation="eager", **size)
        ids = torch.randint(0, 30522, (batch, min(seq, 512)))
        feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        return _Wrap(BertModel(config)), feeds

    return {"transformer block": block, "gpt2-tiny": gpt2, "minilm": minilm}


def _Wrap(model: Any) -> Any:
    """A Hugging Face model called with its inputs by name (as export passes them, in order),
    giving its last hidden state."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            names = ["input_ids", "attention_mask", "token_type_ids"][: len(args)]
            return self.model(**dict(zip(names, args))).last_hidden_state

    return Wrapped()


def bench_models(b: Bench) -> None:
    torch = b.torch
    dtype = torch.float32 if b.smoke else torch.float16
    for name, make in _models(b).items():
        with case(b, Result("models", f"{name} ({str(dtype).replace('torch.', '')})", "ms")) as result:
            module, inputs = make()
            module = module.eval().to(b.device)
            if dtype != torch.float32:
                module = module.to(dtype)
            inputs = {k: (v.to(b.device, dtype) if v.is_floating_point() else v.to(b.device)) for k, v in inputs.items()}
            args = tuple(inputs.values())
            buffer = io.BytesIO()
            with torch.no_grad():
                torch.onnx.export(module, args, buffer, input_names=list(inputs), output_names=["y"], opset_version=17,
                                  dynamo=False, do_constant_folding=True)
                eager = lambda: module(*args)  # noqa: E731
                want = eager()
            import onnx

            model = b.compile(result, onnx.load_from_string(buffer.getvalue()))
            got = b.first_run(result, model, inputs)["y"]
            again = model.run(inputs)["y"]  # later runs launch through the bound table
            b.compare(result, again, want, 3e-2)
            first_error = result.error
            b.compare(result, got, want, 3e-2)
            result.error = max(result.error, first_error)
            result.einc_ms = b.time_ms(lambda: model.run(inputs))
            with torch.no_grad():
                result.reference_ms["torch eager"] = b.time_ms(eager)
                if b.device == "cuda":
                    compiled = torch.compile(module)
                    compiled(*args)
                    result.reference_ms["torch.compile"] = b.time_ms(lambda: compiled(*args))
                    replay, _ = model.capture(inputs)
                    result.reference_ms["einc graph"] = b.time_ms(replay)
            result.einc = result.einc_ms
            result.reference = dict(result.reference_ms)
            result.ratio = result.reference["torch eager"] / result.einc_ms
            kernels = len(model.manifest["kernels"])
            launches = model.source.split("def launch")[1].count("](")
            result.notes = f"{launches} launches of {kernels} kernels" + (f" (not bound: {model.unbound})" if model.unbound else "")
            if "einc graph" in result.reference_ms:
                graph = result.reference_ms["einc graph"]
                result.notes += (f"; from a CUDA graph {result.reference_ms['torch eager'] / graph:.2f}x eager, "
                                 f"{result.reference_ms['torch.compile'] / graph:.2f}x torch.compile")


GROUPS: dict[str, Callable[[Bench], None]] = {
    "matmul": bench_matmul,
    "attention": bench_attention,
    "norms": bench_norms,
    "models": bench_models,
}


# -- report -------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: list[Result]) -> str:
    lines = []
    header = f"{'group':<10} {'case':<30} {'metric':<8} {'einc':>9} {'reference':>34} {'ratio':>6} {'err':>8}  status"
    lines += [header, "-" * len(header)]
    for r in results:
        ref = ", ".join(f"{k} {_fmt(v)}" for k, v in r.reference.items())
        lines.append(
            f"{r.group:<10} {r.case:<30} {r.metric:<8} {_fmt(r.einc):>9} {ref:>34} {_fmt(r.ratio, 2):>6} "
            f"{'-' if r.error is None else f'{r.error:.1e}':>8}  {r.status}" + (f"  ({r.notes})" if r.notes else "")
        )
    lines.append("ratio: einc over the first reference (rates), or the first reference's time over einc's (models);"
                 " above 1 means einc is faster")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--only", help=f"comma-separated groups of {', '.join(GROUPS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks every code path, on the CPU too")
    args = parser.parse_args(argv)
    if args.smoke and not os.environ.get("TRITON_INTERPRET"):
        try:
            import torch

            if not torch.cuda.is_available():
                os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        except ImportError:
            pass
    try:
        import torch
        import triton
    except ImportError as err:
        print(f"gpu.py: needs torch and triton ({err.name} is missing): pip install torch triton", file=sys.stderr)
        return 2
    import einc

    bench = Bench(args.smoke)
    if bench.device == "cpu" and not args.smoke:
        print("gpu.py: no CUDA GPU (or TRITON_INTERPRET=1): run with --smoke to check the code paths", file=sys.stderr)
        return 2
    groups = args.only.split(",") if args.only else list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {list(GROUPS)}")
    device_name = torch.cuda.get_device_name() if bench.device == "cuda" else "CPU (Triton interpreter)"
    print(f"einc {einc.__version__}, torch {torch.__version__}, triton {triton.__version__}, device: {device_name}", flush=True)
    started = time.perf_counter()
    for group in groups:
        group_start = time.perf_counter()
        with case(bench, Result(group, "(setup)", "-"), quiet=True) as setup:
            GROUPS[group](bench)
        if setup.status == "ok":
            bench.results.remove(setup)
        print(f"[{group}: {time.perf_counter() - group_start:.0f} s]", flush=True)
    print()
    print(report(bench.results))
    mismatches = [r for r in bench.results if r.status == "MISMATCH"]
    errors = [r for r in bench.results if r.status == "ERROR"]
    if args.out:
        payload = {
            "device": device_name,
            "torch": torch.__version__,
            "triton": triton.__version__,
            "einc": einc.__version__,
            "python": platform.python_version(),
            "smoke": args.smoke,
            "seconds": time.perf_counter() - started,
            "results": [asdict(r) for r in bench.results],
        }
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.out}")
    for r in mismatches:
        print(f"CORRECTNESS MISMATCH: {r.group} {r.case}: error {r.error:.3g} > tolerance {r.tolerance}", file=sys.stderr)
    for r in errors:
        print(f"ERROR: {r.group} {r.case}: {r.notes}", file=sys.stderr)
    return 1 if mismatches else 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
