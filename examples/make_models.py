"""Builds the example models: an MLP and a small attention block, as ONNX files.

    python examples/make_models.py [OUT_DIR]

mlp.onnx        784-1024-1024-10 MLP at batch 64: three Gemm layers, Relu between.
attention.onnx  one self-attention block (seq 64, d_model 64, 4 heads): MatMul
                projections, Reshape/Transpose into heads, scaled Softmax(QK^T) V,
                and the output projection.
Weights are random with a fixed seed, so the files are the same on every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 10  # onnxruntime 1.31 reads IR versions up to 13; onnx 1.23 writes 14


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    model.producer_name = "einc-examples"
    onnx.checker.check_model(model, full_check=True)
    return model


def make_mlp(batch: int = 64, sizes: tuple[int, ...] = (784, 1024, 1024, 10), seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for n, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        w, b = f"fc{n}.weight", f"fc{n}.bias"
        inits.append(_init(w, rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)))
        inits.append(_init(b, rng.standard_normal(fan_out) * 0.1))
        last = n == len(sizes) - 2
        y = "logits" if last else f"fc{n}"
        nodes.append(helper.make_node("Gemm", [x, w, b], [y], name=f"fc{n}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"relu{n}"], name=f"relu{n}"))
            y = f"relu{n}"
        x = y
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, sizes[-1]])],
        inits,
    )
    return _model(graph)


def make_attention(seq: int = 64, d_model: int = 64, heads: int = 4, seed: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    dh = d_model // heads
    inits = [_init(f"w{p}", rng.standard_normal((d_model, d_model)) / np.sqrt(d_model)) for p in "qkvo"]
    inits.append(numpy_helper.from_array(np.array([seq, heads, dh], dtype=np.int64), "heads_shape"))
    inits.append(numpy_helper.from_array(np.array([seq, d_model], dtype=np.int64), "model_shape"))
    inits.append(_init("scale", np.array(1.0 / np.sqrt(dh))))
    node = helper.make_node
    nodes = []
    for p in "qkv":
        nodes += [
            node("MatMul", ["x", f"w{p}"], [f"{p}_proj"], name=f"{p}_proj"),
            node("Reshape", [f"{p}_proj", "heads_shape"], [f"{p}_heads"], name=f"{p}_reshape"),
        ]
    nodes += [
        node("Transpose", ["q_heads"], ["q"], name="q_transpose", perm=[1, 0, 2]),
        node("Transpose", ["k_heads"], ["kt"], name="k_transpose", perm=[1, 2, 0]),
        node("Transpose", ["v_heads"], ["v"], name="v_transpose", perm=[1, 0, 2]),
        node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        node("Mul", ["scores", "scale"], ["scaled"], name="scale"),
        node("Softmax", ["scaled"], ["probs"], name="softmax", axis=-1),
        node("MatMul", ["probs", "v"], ["context"], name="av"),
        node("Transpose", ["context"], ["context_t"], name="context_transpose", perm=[1, 0, 2]),
        node("Reshape", ["context_t", "model_shape"], ["merged"], name="merge_heads"),
        node("MatMul", ["merged", "wo"], ["y"], name="out_proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, d_model])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, d_model])],
        inits,
    )
    return _model(graph)


MODELS = {"mlp.onnx": make_mlp, "attention.onnx": make_attention}


def main(out_dir: str = "examples") -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, make in MODELS.items():
        onnx.save(make(), out / name)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
