"""Standalone softmax attention on the CPU: einc's attention kernel, einc's three kernels
(`fuse{attention=false}`: scores GEMM, rows softmax, values GEMM) and onnxruntime.

The model is MatMul(Q, K^T) * d^-0.5 (+ a causal constant) -> Softmax -> MatMul(., V)
with Q, K, V inputs [1, heads, seq, 64]. The three engines run interleaved in one
process (default threads for all); the table gives medians and ratios to onnxruntime. Run:
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/attention.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent.parent))

CASES = [(8, 512, 64, False), (8, 512, 64, True), (8, 1024, 64, False), (8, 1024, 64, True), (12, 128, 64, False)]
"""(heads, sequence, head dim, causal)."""


def model(heads: int, seq: int, d: int, causal: bool) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["s"]),
    ]
    inits = [numpy_helper.from_array(np.array(d**-0.5, np.float32), "scale")]
    scores = "s"
    if causal:
        inits.append(numpy_helper.from_array(np.triu(np.full((seq, seq), -np.inf, np.float32), 1), "mask"))
        nodes.append(helper.make_node("Add", ["s", "mask"], ["sm"]))
        scores = "sm"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    shape = [1, heads, seq, d]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(n, f, shape) for n in "qkv"],
                              [helper.make_tensor_value_info("y", f, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def compile_three_kernels(proto: onnx.ModelProto):
    """einc with the attention group off (the pipeline before the attention kernel)."""
    import einc
    from einc.backends.llvm import target

    old = target.CPU_LOOPS
    target.CPU_LOOPS = old.replace("fuse,", "fuse{attention=false},")
    try:
        return einc.compile(proto, cache=False)
    finally:
        target.CPU_LOOPS = old


def main() -> None:
    import onnxruntime as ort

    import einc

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| heads x seq x d | mask | einc attention kernel | einc 3 kernels | onnxruntime | kernel / ort | 3 kernels / ort |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for heads, seq, d, causal in CASES:
        proto = model(heads, seq, d, causal)
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal((1, heads, seq, d)).astype(np.float32) for n in "qkv"}
        fused = einc.compile(proto, cache=False)
        three = compile_three_kernels(proto)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        ref = session.run(None, feeds)[0]
        for engine in (fused, three):
            np.testing.assert_allclose(engine.run(feeds)["y"], ref, rtol=1e-4, atol=1e-5)
        engines = {"kernel": fused.run, "three": three.run, "ort": lambda f, s=session: s.run(None, f)}
        times: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(3):
            for fn in engines.values():
                fn(feeds)
        for _ in range(args.runs):
            for name, fn in engines.items():
                start = time.perf_counter()
                fn(feeds)
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"| {heads} x {seq} x {d} | {'causal' if causal else 'none'} | {med['kernel']:.3f} ms | {med['three']:.3f} ms | "
              f"{med['ort']:.3f} ms | {med['kernel'] / med['ort']:.2f} | {med['three'] / med['ort']:.2f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
