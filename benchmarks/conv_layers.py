"""Per-layer timings of ResNet-18's and PP-OCR's convolution shapes: einc against onnxruntime.

Each layer is a one-node model (Conv with bias, then Relu), measured by `einc bench`'s
method (einc/tools/bench.py: each engine in a process of its own, interleaved rounds);
the table gives each engine's median and the ratio. Run:
`.venv/bin/python benchmarks/conv_layers.py [name ...]`.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# name: (cin, cout, size, kernel, stride, pad, group)
LAYERS = {
    "stem 7x7/2 3->64 @224": (3, 64, 224, 7, 2, 3, 1),
    "3x3 64->64 @56": (64, 64, 56, 3, 1, 1, 1),
    "3x3/2 64->128 @56": (64, 128, 56, 3, 2, 1, 1),
    "3x3 128->128 @28": (128, 128, 28, 3, 1, 1, 1),
    "1x1/2 64->128 @56": (64, 128, 56, 1, 2, 0, 1),
    "3x3 256->256 @14": (256, 256, 14, 3, 1, 1, 1),
    "3x3 512->512 @7": (512, 512, 7, 3, 1, 1, 1),
    "dw 3x3 64 @64x128": (64, 64, (64, 128), 3, 1, 1, 64),
    "dw 5x5 96 @32x64": (96, 96, (32, 64), 5, 1, 2, 96),
}


def model(cin: int, cout: int, size, k: int, stride: int, pad: int, group: int) -> onnx.ModelProto:
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32) * 0.1, "w")
    bias = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4, group=group),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main(names: list[str], runs: int) -> None:
    from einc.tools.bench import bench

    print("| layer | GFLOP | einc | onnxruntime | einc / ort | max rel diff |")
    print("|---|---|---|---|---|---|")
    for name, shape in LAYERS.items():
        if names and not any(n in name for n in names):
            continue
        r = bench(model(*shape), runs=runs)
        te, to = (r["median_s"][e] * 1e3 for e in ("einc", "onnxruntime"))
        print(f"| {name} | {r['gflop']:.3f} | {te:.3f} ms | {to:.3f} ms | {te / to:.2f} | {r['max_rel_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:], runs=200)
