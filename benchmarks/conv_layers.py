"""Per-layer timings of ResNet-18's and PP-OCR's convolution shapes: einc against onnxruntime.

Each layer is a one-node model (Conv with bias, then Relu), compiled by einc and
timed interleaved with onnxruntime (default threads) in the same process; the
table gives each engine's median and the ratio. Run:
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/conv_layers.py [--cpu] [name ...]`.
"""

from __future__ import annotations

import statistics
import sys
import time

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


CLOCK = time.perf_counter
"""Wall time; `--cpu` (one thread each) takes process CPU time, which a loaded host does not inflate."""


def median_ms(fn, rounds: int = 15, reps: int = 10) -> float:
    times = []
    for _ in range(rounds):
        t = CLOCK()
        for _ in range(reps):
            fn()
        times.append((CLOCK() - t) / reps * 1e3)
    return statistics.median(times)


def main(names: list[str]) -> None:
    import onnxruntime as ort

    import einc

    print("| layer | GFLOP | einc | onnxruntime | einc / ort | max rel diff |")
    print("|---|---|---|---|---|---|")
    for name, shape in LAYERS.items():
        if names and not any(n in name for n in names):
            continue
        m = model(*shape)
        x = np.random.default_rng(1).standard_normal([d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
        compiled = einc.compile(m, cache=False)
        options = ort.SessionOptions()
        if CLOCK is time.process_time:
            options.intra_op_num_threads = 1
        sess = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"x": x})[0]
        got = compiled.run({"x": x})
        got = got["z"] if isinstance(got, dict) else got[0]
        diff = float(np.abs(got - ref).max() / np.abs(ref).max())
        for _ in range(5):
            compiled.run({"x": x}), sess.run(None, {"x": x})
        e, o = [], []
        for _ in range(3):
            e.append(median_ms(lambda c=compiled, x=x: c.run({"x": x}), 5))
            o.append(median_ms(lambda s=sess, x=x: s.run(None, {"x": x}), 5))
        cin, cout, size, k, stride, _, group = shape
        oh = (size if isinstance(size, int) else size[0]) // stride
        ow = (size if isinstance(size, int) else size[1]) // stride
        gflop = 2 * cout * oh * ow * (cin // group) * k * k / 1e9
        te, to = statistics.median(e), statistics.median(o)
        print(f"| {name} | {gflop:.3f} | {te:.3f} ms | {to:.3f} ms | {te / to:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--cpu" in args:
        import os

        args.remove("--cpu")
        os.environ["EINC_NUM_THREADS"] = "1"
        CLOCK = time.process_time
    main(args)
