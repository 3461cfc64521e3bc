"""onnx-to-ein, nn family: convolution, pooling, normalisation, activations,
softmax relatives and the recurrent layers. Each case runs through the
ein interpreter and the CPU backend and is compared with onnxruntime at
RTOL/ATOL; what onnxruntime refuses is compared with onnx's reference evaluator
or, where that is wrong too, with numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import einc
from einc.diagnostics import EincError
from einc.frontend.onnx import import_model
from einc.ir.ein import EinsumOp, PadOp
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from tests.conftest import IR_VERSION, ort_run, single_node_model
from tests.unit.test_onnx_to_ein_math import check_lowering, node_model, onnx_reference

RTOL, ATOL = 1e-5, 1e-5


def _f(r: np.random.Generator, *shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return r.uniform(low, high, shape).astype(np.float32)


def case(name: str, op: str, inputs, inits=None, opset: int = 17, outputs: int = 1, **attrs):
    """One test case: inputs(rng) and inits(rng) give the graph inputs and initializers."""
    return pytest.param(op, inputs, inits, opset, outputs, attrs, id=name)


def _model(op_type: str, inputs: dict, inits: dict, opset: int, outputs: int, names=None, **attrs) -> onnx.ModelProto:
    """`node_model`, except for ops whose outputs onnx's shape inference leaves
    open (GroupNormalization, MeanVarianceNormalization): Y is declared like X."""
    if op_type not in ("GroupNormalization", "MeanVarianceNormalization"):
        return node_model(op_type, inputs, inits, opset=opset, n_outputs=outputs, input_names=names, **attrs)
    x = inputs["x"]
    graph = helper.make_graph(
        [helper.make_node(op_type, [*inputs, *inits], ["y0"], name=f"{op_type.lower()}_node", **attrs)],
        "g",
        [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
        [helper.make_tensor_value_info("y0", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


CONV = [
    case("conv2d-stride-pad", "Conv", lambda r: {"x": _f(r, 1, 3, 8, 8)},
         lambda r: {"w": _f(r, 4, 3, 3, 3), "b": _f(r, 4)}, strides=[2, 2], pads=[1, 1, 1, 1]),
    case("conv2d-dilated-asym-pads", "Conv", lambda r: {"x": _f(r, 1, 3, 8, 8)},
         lambda r: {"w": _f(r, 4, 3, 3, 3)}, dilations=[2, 2], pads=[1, 0, 2, 1]),
    case("conv2d-groups3", "Conv", lambda r: {"x": _f(r, 1, 3, 8, 8)},
         lambda r: {"w": _f(r, 6, 1, 3, 3), "b": _f(r, 6)}, group=3, strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 2]),
    case("conv2d-groups2", "Conv", lambda r: {"x": _f(r, 2, 4, 7, 7)},
         lambda r: {"w": _f(r, 6, 2, 3, 3)}, group=2),
    case("conv2d-depthwise", "Conv", lambda r: {"x": _f(r, 1, 4, 6, 6)},
         lambda r: {"w": _f(r, 4, 1, 3, 3), "b": _f(r, 4)}, group=4, pads=[1, 1, 1, 1]),
    case("conv2d-same-upper", "Conv", lambda r: {"x": _f(r, 1, 2, 7, 8)},
         lambda r: {"w": _f(r, 3, 2, 4, 3)}, auto_pad="SAME_UPPER", strides=[2, 2]),
    case("conv2d-same-lower", "Conv", lambda r: {"x": _f(r, 1, 2, 7, 8)},
         lambda r: {"w": _f(r, 3, 2, 4, 3)}, auto_pad="SAME_LOWER", strides=[2, 3]),
    case("conv2d-valid", "Conv", lambda r: {"x": _f(r, 1, 2, 7, 8)},
         lambda r: {"w": _f(r, 3, 2, 3, 3)}, auto_pad="VALID", strides=[2, 2]),
    case("conv2d-weight-input", "Conv", lambda r: {"x": _f(r, 2, 3, 5, 5), "w": _f(r, 2, 3, 2, 2)}),
    case("conv1d", "Conv", lambda r: {"x": _f(r, 2, 3, 10)},
         lambda r: {"w": _f(r, 5, 3, 3), "b": _f(r, 5)}, strides=[2], pads=[1, 1], dilations=[2]),
    case("conv3d", "Conv", lambda r: {"x": _f(r, 1, 2, 5, 6, 4)},
         lambda r: {"w": _f(r, 3, 2, 3, 2, 2), "b": _f(r, 3)}, pads=[1, 0, 1, 1, 1, 0], strides=[1, 2, 1]),
    case("convT2d-stride-pad-outpad", "ConvTranspose", lambda r: {"x": _f(r, 1, 3, 4, 4)},
         lambda r: {"w": _f(r, 3, 2, 3, 3), "b": _f(r, 2)}, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    case("convT2d-groups3", "ConvTranspose", lambda r: {"x": _f(r, 1, 6, 3, 3)},
         lambda r: {"w": _f(r, 6, 1, 3, 3), "b": _f(r, 3)}, group=3, strides=[2, 1]),
    case("convT2d-groups2-dilated", "ConvTranspose", lambda r: {"x": _f(r, 2, 4, 3, 4)},
         lambda r: {"w": _f(r, 4, 3, 2, 3)}, group=2, dilations=[2, 2], strides=[2, 3], pads=[0, 1, 2, 0]),
    case("convT2d-output-shape", "ConvTranspose", lambda r: {"x": _f(r, 1, 2, 4, 4)},
         lambda r: {"w": _f(r, 2, 3, 3, 3)}, strides=[2, 2], output_shape=[8, 10]),
    case("convT2d-same-upper", "ConvTranspose", lambda r: {"x": _f(r, 1, 2, 3, 4)},
         lambda r: {"w": _f(r, 2, 3, 4, 3)}, strides=[2, 2], auto_pad="SAME_UPPER"),
    case("convT2d-same-lower", "ConvTranspose", lambda r: {"x": _f(r, 1, 2, 3, 4)},
         lambda r: {"w": _f(r, 2, 3, 4, 3)}, strides=[2, 2], auto_pad="SAME_LOWER"),
    case("convT2d-large-pads", "ConvTranspose", lambda r: {"x": _f(r, 1, 2, 5, 5)},
         lambda r: {"w": _f(r, 2, 2, 3, 3)}, pads=[3, 2, 3, 0]),
    case("convT1d", "ConvTranspose", lambda r: {"x": _f(r, 2, 3, 5)},
         lambda r: {"w": _f(r, 3, 4, 3), "b": _f(r, 4)}, strides=[3], pads=[1, 0]),
    case("convT3d", "ConvTranspose", lambda r: {"x": _f(r, 1, 2, 3, 2, 3)},
         lambda r: {"w": _f(r, 2, 2, 2, 3, 2)}, strides=[2, 1, 2]),
]

POOL = [
    case("maxpool-stride-pad", "MaxPool", lambda r: {"x": _f(r, 1, 3, 8, 8)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    case("maxpool-ceil", "MaxPool", lambda r: {"x": _f(r, 2, 2, 8, 7)}, kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1),
    case("maxpool-dilated", "MaxPool", lambda r: {"x": _f(r, 1, 2, 9, 9)}, kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 0, 1, 2]),
    case("maxpool-same-upper", "MaxPool", lambda r: {"x": _f(r, 1, 2, 7, 7)}, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    case("maxpool-all-negative", "MaxPool", lambda r: {"x": _f(r, 1, 1, 5, 5, low=-3, high=-1)}, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    case("maxpool1d", "MaxPool", lambda r: {"x": _f(r, 2, 3, 11)}, kernel_shape=[4], strides=[3], ceil_mode=1),
    case("maxpool3d", "MaxPool", lambda r: {"x": _f(r, 1, 2, 5, 6, 4)}, kernel_shape=[2, 3, 2], strides=[2, 2, 1]),
    case("maxpool-uint8", "MaxPool", lambda r: {"x": r.integers(0, 255, (1, 2, 6, 6)).astype(np.uint8)}, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    case("avgpool-exclude-pad", "AveragePool", lambda r: {"x": _f(r, 1, 3, 8, 8)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    case("avgpool-include-pad", "AveragePool", lambda r: {"x": _f(r, 1, 3, 8, 8)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    case("avgpool-ceil-exclude", "AveragePool", lambda r: {"x": _f(r, 1, 2, 8, 7)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1),
    case("avgpool-ceil-include", "AveragePool", lambda r: {"x": _f(r, 1, 2, 8, 7)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=1),
    case("avgpool-same-lower", "AveragePool", lambda r: {"x": _f(r, 1, 2, 7, 6)}, kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
    case("avgpool-no-pad", "AveragePool", lambda r: {"x": _f(r, 2, 2, 6, 6)}, kernel_shape=[2, 2], strides=[2, 2]),
    case("avgpool-dilated", "AveragePool", lambda r: {"x": _f(r, 1, 2, 9, 9)}, opset=19, kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    case("avgpool1d", "AveragePool", lambda r: {"x": _f(r, 2, 3, 10)}, kernel_shape=[3], pads=[2, 1], count_include_pad=1),
    case("avgpool3d", "AveragePool", lambda r: {"x": _f(r, 1, 2, 5, 4, 4)}, kernel_shape=[3, 2, 2], pads=[1, 0, 1, 1, 1, 0]),
    case("lppool-p2", "LpPool", lambda r: {"x": _f(r, 1, 2, 6, 6)}, opset=18, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    case("lppool-p1", "LpPool", lambda r: {"x": _f(r, 1, 2, 6, 6)}, opset=18, kernel_shape=[2, 2], p=1),
    case("global-avgpool", "GlobalAveragePool", lambda r: {"x": _f(r, 2, 3, 5, 4)}),
    case("global-maxpool", "GlobalMaxPool", lambda r: {"x": _f(r, 2, 3, 5, 4)}),
    case("global-avgpool1d", "GlobalAveragePool", lambda r: {"x": _f(r, 2, 3, 7)}),
    case("global-lppool", "GlobalLpPool", lambda r: {"x": _f(r, 2, 3, 5, 4)}, p=3),
]


def _bn_stats(r: np.random.Generator, c: int) -> dict[str, np.ndarray]:
    return {"scale": _f(r, c), "bias": _f(r, c), "mean": _f(r, c), "var": _f(r, c, low=0.2, high=2.0)}


NORM = [
    case("batchnorm", "BatchNormalization", lambda r: {"x": _f(r, 2, 3, 4, 5)}, lambda r: _bn_stats(r, 3), epsilon=1e-3),
    case("batchnorm-2d", "BatchNormalization", lambda r: {"x": _f(r, 4, 3)}, lambda r: _bn_stats(r, 3)),
    case("batchnorm-inputs", "BatchNormalization", lambda r: {"x": _f(r, 2, 70, 2), **_bn_stats(r, 70)}, opset=15),
    case("instancenorm", "InstanceNormalization", lambda r: {"x": _f(r, 2, 3, 4, 5)}, lambda r: {"s": _f(r, 3), "b": _f(r, 3)}),
    case("layernorm-last", "LayerNormalization", lambda r: {"x": _f(r, 2, 3, 8)}, lambda r: {"s": _f(r, 8), "b": _f(r, 8)}),
    case("layernorm-axis1-stats", "LayerNormalization", lambda r: {"x": _f(r, 2, 3, 4)},
         lambda r: {"s": _f(r, 3, 4), "b": _f(r, 3, 4)}, outputs=3, axis=1, epsilon=1e-3),
    case("layernorm-no-bias", "LayerNormalization", lambda r: {"x": _f(r, 4, 6)}, lambda r: {"s": _f(r, 6)}),
    case("groupnorm-18", "GroupNormalization", lambda r: {"x": _f(r, 2, 6, 3, 4)}, lambda r: {"s": _f(r, 3), "b": _f(r, 3)}, opset=18, num_groups=3),
    case("groupnorm-21", "GroupNormalization", lambda r: {"x": _f(r, 2, 6, 3, 4)}, lambda r: {"s": _f(r, 6), "b": _f(r, 6)}, opset=21, num_groups=2),
    case("mvn-default-axes", "MeanVarianceNormalization", lambda r: {"x": _f(r, 2, 3, 4, 5)}, axes=[0, 2, 3]),
    case("mvn-axes", "MeanVarianceNormalization", lambda r: {"x": _f(r, 2, 3, 4, 5)}, axes=[2, 3]),
    case("rmsnorm", "RMSNormalization", lambda r: {"x": _f(r, 2, 3, 8)}, lambda r: {"s": _f(r, 8)}, opset=23),
    case("lpnorm-l2", "LpNormalization", lambda r: {"x": _f(r, 3, 5)}),
    case("lpnorm-l1-axis0", "LpNormalization", lambda r: {"x": _f(r, 3, 5)}, axis=0, p=1),
    case("lrn-odd", "LRN", lambda r: {"x": _f(r, 2, 5, 3, 3)}, size=3, alpha=0.01, beta=0.5, bias=2.0),
]

ACT = [
    *[case(op.lower(), op, lambda r: {"x": _f(r, 3, 7, low=-4, high=4)}) for op in
      ["LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid", "Softsign", "Shrink"]],
    case("hardswish", "HardSwish", lambda r: {"x": _f(r, 3, 7, low=-5, high=5)}, opset=18),
    case("mish", "Mish", lambda r: {"x": _f(r, 3, 7, low=-6, high=6)}, opset=18),
    case("softplus-wide", "Softplus", lambda r: {"x": np.array([[-100.0, -20.0, -1.0, 0.0, 0.5, 30.0, 100.0]], np.float32)}),
    case("leakyrelu-alpha", "LeakyRelu", lambda r: {"x": _f(r, 2, 5)}, alpha=0.3),
    case("elu-alpha", "Elu", lambda r: {"x": _f(r, 2, 5)}, alpha=0.5),
    case("selu-params", "Selu", lambda r: {"x": _f(r, 2, 5)}, alpha=1.5, gamma=2.0),
    case("celu-alpha", "Celu", lambda r: {"x": _f(r, 2, 5)}, alpha=2.0),
    case("thresholdedrelu-alpha", "ThresholdedRelu", lambda r: {"x": _f(r, 2, 5)}, alpha=0.5),
    case("hardsigmoid-params", "HardSigmoid", lambda r: {"x": _f(r, 2, 5, low=-5, high=5)}, alpha=0.3, beta=0.4),
    case("shrink-params", "Shrink", lambda r: {"x": _f(r, 2, 5)}, bias=0.5, lambd=1.0),
    case("gelu", "Gelu", lambda r: {"x": _f(r, 3, 7, low=-4, high=4)}, opset=20),
    case("gelu-tanh", "Gelu", lambda r: {"x": _f(r, 3, 7, low=-4, high=4)}, opset=20, approximate="tanh"),
    case("prelu-channel", "PRelu", lambda r: {"x": _f(r, 2, 3, 4, 4)}, lambda r: {"slope": _f(r, 3, 1, 1)}),
    case("prelu-scalar", "PRelu", lambda r: {"x": _f(r, 2, 3), "slope": _f(r, 1)}),
    case("logsoftmax-last", "LogSoftmax", lambda r: {"x": _f(r, 3, 4, 9, low=-20, high=20)}),
    case("logsoftmax-axis0", "LogSoftmax", lambda r: {"x": _f(r, 6, 4)}, axis=0),
    case("logsoftmax-opset11", "LogSoftmax", lambda r: {"x": _f(r, 2, 3, 4)}, opset=11, axis=1),
    case("softmax-opset11", "Softmax", lambda r: {"x": _f(r, 2, 3, 4)}, opset=11),
    case("hardmax-ties", "Hardmax", lambda r: {"x": r.integers(0, 3, (3, 4, 5)).astype(np.float32)}),
    case("hardmax-axis1", "Hardmax", lambda r: {"x": _f(r, 3, 4, 5)}, axis=1),
    case("hardmax-opset11", "Hardmax", lambda r: {"x": r.integers(0, 3, (3, 4, 5)).astype(np.float32)}, opset=11, axis=1),
]


SEQ, BATCH, SIZE, HIDDEN = 4, 2, 3, 5
"""The shape of every recurrent case: sequence, batch, input and hidden sizes."""


def _rnn(r: np.random.Generator, gates: int, dirs: int = 1, bias: bool = True) -> dict[str, np.ndarray]:
    """Initializers W, R, (B) of a recurrent op at ONNX's shapes, small random values."""
    inits = {"w": _f(r, dirs, gates * HIDDEN, SIZE, low=-0.7, high=0.7),
             "r": _f(r, dirs, gates * HIDDEN, HIDDEN, low=-0.7, high=0.7)}
    if bias:
        inits["b"] = _f(r, dirs, 2 * gates * HIDDEN, low=-0.5, high=0.5)
    return inits


def _states(r: np.random.Generator, dirs: int, layout: int = 0) -> np.ndarray:
    return _f(r, *((BATCH, dirs, HIDDEN) if layout else (dirs, BATCH, HIDDEN)), low=-1, high=1)


def rnn_case(name: str, op: str, dirs: int = 1, lens: np.ndarray | None = None, peep: bool = False,
             layout: int = 0, initial: bool = False, bias: bool = True, outputs: int = 3, **attrs):
    """A recurrent case (opset 14) of the shape above; the node's absent
    optional inputs are empty names."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    direction = attrs.pop("direction", {1: "forward", 2: "bidirectional"}[dirs])

    def inputs(r):
        x = _f(r, *((BATCH, SEQ, SIZE) if layout else (SEQ, BATCH, SIZE)))
        feeds = {"x": x}
        if lens is not None:
            feeds["lens"] = lens
        if initial:
            feeds["h0"] = _states(r, dirs, layout=layout)
            if op == "LSTM":
                feeds["c0"] = _states(r, dirs, layout=layout)
        return feeds

    def inits(r):
        values = _rnn(r, gates, dirs, bias)
        if peep:
            values["p"] = _f(r, dirs, 3 * HIDDEN, low=-0.5, high=0.5)
        return values

    names = ["x", "w", "r", "b" if bias else "", "lens" if lens is not None else "", "h0" if initial else ""]
    if op == "LSTM":
        names += ["c0" if initial else "", "p" if peep else ""]
    while names[-1] == "":
        names.pop()
    return pytest.param(op, inputs, inits, 14, outputs,
                        {"hidden_size": HIDDEN, "direction": direction, "layout": layout, **attrs, "_names": names}, id=name)


LENS = np.array([3, 1], np.int32)

RNNS = [
    rnn_case("lstm-forward", "LSTM"),
    rnn_case("lstm-reverse", "LSTM", direction="reverse", initial=True),
    rnn_case("lstm-bidirectional-peepholes", "LSTM", dirs=2, initial=True, peep=True),
    rnn_case("lstm-no-bias-y-only", "LSTM", bias=False, outputs=1),
    rnn_case("lstm-sequence-lens", "LSTM", dirs=2, lens=LENS, initial=True),
    rnn_case("lstm-clip-activations", "LSTM", clip=0.4, activations=["HardSigmoid", "LeakyRelu", "Softsign"],
             activation_alpha=[0.3, 0.2], activation_beta=[0.4]),
    rnn_case("lstm-input-forget", "LSTM", input_forget=1),
    rnn_case("gru-forward", "GRU", outputs=2),
    rnn_case("gru-initial", "GRU", initial=True, outputs=2),
    rnn_case("gru-linear-before-reset", "GRU", linear_before_reset=1, outputs=2),
    rnn_case("gru-lbr-initial-bidirectional", "GRU", dirs=2, initial=True, linear_before_reset=1, outputs=2),
    rnn_case("gru-bidirectional-lens", "GRU", dirs=2, lens=LENS, outputs=2),
    rnn_case("gru-reverse-no-bias", "GRU", direction="reverse", bias=False, initial=True, outputs=2),
    rnn_case("rnn-forward", "RNN", outputs=2),
    rnn_case("rnn-bidirectional-initial", "RNN", dirs=2, initial=True, outputs=2),
    rnn_case("rnn-relu-clip-lens", "RNN", activations=["Relu"], clip=0.8, lens=LENS, outputs=2),
    rnn_case("rnn-affine-scaledtanh", "RNN", dirs=2, activations=["Affine", "ScaledTanh"],
             activation_alpha=[0.5, 1.5], activation_beta=[0.1, 0.7], outputs=2),
]


@pytest.mark.parametrize("op_type,make_inputs,make_inits,opset,outputs,attrs", [*CONV, *POOL, *NORM, *ACT, *RNNS])
def test_lowering_matches_onnxruntime(rng, op_type, make_inputs, make_inits, opset, outputs, attrs):
    attrs = dict(attrs)
    names = attrs.pop("_names", None)
    inputs = make_inputs(rng)
    inits = make_inits(rng) if make_inits else {}
    model = _model(op_type, inputs, inits, opset, outputs, names, **attrs)
    check_lowering(model, inputs, rtol=RTOL, atol=ATOL)


def _lowered(model):
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    return list(imported.module.walk())


def test_conv_is_pad_then_one_affine_einsum(rng):
    model = node_model("Conv", {"x": _f(rng, 1, 3, 8, 8)}, {"w": _f(rng, 4, 3, 3, 3)}, strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 2])
    ops = _lowered(model)
    pads = [op for op in ops if isinstance(op, PadOp)]
    einsums = [op for op in ops if isinstance(op, EinsumOp)]
    assert len(pads) == 1 and pads[0].amounts[0] == [0, 0, 1, 1]
    assert len(einsums) == 1 and einsums[0].reduce_op == "add"
    assert [e.data for e in einsums[0].indices.data[0]] == ["n", "c", "p0 * 2 + r0", "p1 * 2 + r1 * 2"]


def test_grouped_conv_keeps_indices_affine(rng):
    model = node_model("Conv", {"x": _f(rng, 1, 6, 5, 5)}, {"w": _f(rng, 6, 2, 3, 3)}, group=3)
    (einsum,) = [op for op in _lowered(model) if isinstance(op, EinsumOp)]
    assert [[e.data for e in dims] for dims in einsum.indices] == [
        ["n", "g", "c", "p0 + r0", "p1 + r1"],
        ["g", "m", "c", "r0", "r1"],
    ]


def test_conv_transpose_dilates_and_flips(rng):
    model = node_model("ConvTranspose", {"x": _f(rng, 1, 2, 4, 4)}, {"w": _f(rng, 2, 3, 3, 3)}, strides=[2, 2], pads=[1, 1, 1, 1])
    ops = _lowered(model)
    (pad,) = [op for op in ops if isinstance(op, PadOp)]
    assert pad.amounts == ([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1])
    (einsum,) = [op for op in ops if isinstance(op, EinsumOp)]
    assert [[e.data for e in dims] for dims in einsum.indices] == [
        ["n", "c", "p0 + 2 - r0", "p1 + 2 - r1"],
        ["c", "m", "r0", "r1"],
    ]


def test_layer_norm_is_a_four_einsum_cascade(rng):
    model = node_model("LayerNormalization", {"x": _f(rng, 4, 8)}, {"s": _f(rng, 8), "b": _f(rng, 8)})
    einsums = [op for op in _lowered(model) if isinstance(op, EinsumOp)]
    assert [(op.reduce_op, op.map.data) for op in einsums] == [
        ("add", "$0"),
        ("add", "($0 - $1 / 8.0) * ($0 - $1 / 8.0)"),
        (None, "1.0 / sqrt($0 / 8.0 + 1e-05)"),
        (None, "($0 - $1 / 8.0) * $2 * $3 + $4"),
    ]


def test_lstm_unrolls_to_three_einsums_per_step(rng):
    model = node_model("LSTM", {"x": _f(rng, 4, 2, 3)}, _rnn(rng, 4), hidden_size=5, n_outputs=3)
    einsums = [op for op in _lowered(model) if isinstance(op, EinsumOp)]
    # XW once, then per step HR (not at step 0: no initial state), C' and H'
    assert len(einsums) == 1 + 4 * 3 - 1


def _expect_unsupported(model, *words: str) -> None:
    with pytest.raises(EincError) as err:
        einc.compile(model)
    for word in words:
        assert word in str(err.value)


def test_maxpool_indices_are_unsupported(rng):
    model = node_model("MaxPool", {"x": _f(rng, 1, 1, 4, 4)}, n_outputs=2, kernel_shape=[2, 2])
    _expect_unsupported(model, "maxpool_node", "Indices")


def test_batchnorm_training_is_unsupported(rng):
    model = node_model("BatchNormalization", {"x": _f(rng, 2, 3, 4)}, _bn_stats(rng, 3), opset=15, training_mode=1, n_outputs=3)
    _expect_unsupported(model, "batchnormalization_node", "training")


def _check_against_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Like `check_lowering`, against onnx's reference evaluator: for what
    onnxruntime refuses (layout 1 recurrences; the reference ignores sequence_lens)."""
    from onnx.reference import ReferenceEvaluator

    expected = ReferenceEvaluator(model).run(None, feeds)
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    interpreted = run_function(next(iter(imported.module.ops)), list(feeds.values()), imported.weights)
    compiled = einc.compile(model).run(feeds)
    for got, want, name in zip(interpreted, expected, compiled):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"interpreter, {name}")
        np.testing.assert_allclose(compiled[name], want, rtol=RTOL, atol=ATOL, err_msg=f"compiled, {name}")


REFERENCE_ONLY = [
    rnn_case("lstm-layout1", "LSTM", dirs=2, initial=True, layout=1),
    rnn_case("gru-layout1", "GRU", initial=True, layout=1, outputs=2),
    rnn_case("rnn-layout1", "RNN", dirs=2, layout=1, outputs=2),
]


@pytest.mark.parametrize("op_type,make_inputs,make_inits,opset,outputs,attrs", REFERENCE_ONLY)
def test_lowering_matches_onnx_reference(rng, op_type, make_inputs, make_inits, opset, outputs, attrs):
    attrs = dict(attrs)
    names = attrs.pop("_names", None)
    inputs = make_inputs(rng)
    inits = make_inits(rng) if make_inits else {}
    _check_against_reference(_model(op_type, inputs, inits, opset, outputs, names, **attrs), inputs)


def test_lrn_even_size_follows_the_spec(rng):
    """onnxruntime refuses even sizes (and onnx's reference sums the wrong axis):
    check the spec's window, c - floor((size-1)/2) .. c + ceil((size-1)/2), in numpy."""
    x = _f(rng, 2, 6, 2, 3)
    model = node_model("LRN", {"x": x}, size=4, alpha=0.5, beta=0.6, bias=1.5)
    squares = np.stack([(x[:, max(0, c - 1) : c + 3] ** 2).sum(axis=1) for c in range(6)], axis=1)
    expected = x / (1.5 + 0.5 / 4 * squares) ** 0.6
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    (interpreted,) = run_function(next(iter(imported.module.ops)), [x], imported.weights)
    np.testing.assert_allclose(interpreted, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(einc.compile(model).run({"x": x})["y0"], expected, rtol=RTOL, atol=ATOL)


# -- DFT, STFT, MelWeightMatrix -------------------------------------------------------

SPECTRAL_TOL = 1e-4
"""A DFT sums n products of magnitude ~1: float32 error grows with n (onnxruntime uses an FFT)."""


def _dft_case(name, shape, opset=20, length=None, axis=None, **attrs):
    return pytest.param(shape, opset, length, axis, attrs, id=name)


DFTS = [
    _dft_case("real", (1, 10, 10, 1), axis=1),
    _dft_case("complex-inverse", (2, 8, 3, 2), axis=1, inverse=1),
    _dft_case("rfft", (1, 10, 10, 1), axis=1, onesided=1),
    _dft_case("irfft", (1, 6, 10, 2), axis=1, inverse=1, onesided=1),
    _dft_case("irfft-odd-length", (2, 5, 2), length=9, axis=1, inverse=1, onesided=1),
    _dft_case("padded", (3, 5, 1), length=8, axis=-2),
    _dft_case("truncated-complex", (3, 12, 2), length=7),
    _dft_case("default-axis-rfft-odd", (4, 9, 1), onesided=1),
    _dft_case("opset17-axis-attribute", (1, 10, 7, 1), opset=17, axis=2),
    _dft_case("opset17-length", (2, 6, 2), opset=17, length=16, inverse=1),
    _dft_case("long", (2, 100, 1), axis=1),
]


@pytest.mark.parametrize("shape,opset,length,axis,attrs", DFTS)
def test_dft_matches_onnxruntime(rng, shape, opset, length, axis, attrs):
    feeds = {"x": _f(rng, *shape)}
    inits = {} if length is None else {"len": np.array(length, np.int64)}
    names = ["x", "len" if length is not None else ""]
    if opset >= 20 and axis is not None:
        inits["axis"] = np.array(axis, np.int64)
        names.append("axis")
    elif axis is not None:
        attrs = {**attrs, "axis": axis}
    model = node_model("DFT", feeds, inits, opset=opset, input_names=names, **attrs)
    # onnxruntime's transform of 100 points is off by 2e-4 (the Nyquist bin's imaginary
    # part of a real signal, exactly 0): there onnx's reference (numpy's FFT in f64) decides
    reference = onnx_reference if shape[axis or -2] > 64 else ort_run
    check_lowering(model, feeds, rtol=SPECTRAL_TOL, atol=SPECTRAL_TOL, reference=reference)


@pytest.mark.parametrize("window", [False, True])
@pytest.mark.parametrize("parts,length,step", [(1, 16, 8), (2, 10, 3)])
def test_stft_matches_onnxruntime(rng, window, parts, length, step):
    feeds = {"x": _f(rng, 2, 64, parts)}
    inits = {"step": np.array(step, np.int64), "len": np.array(length, np.int64)}
    names = ["x", "step", "", "len"]
    if window:
        feeds["w"] = np.hanning(length).astype(np.float32)
        names[2] = "w"
    model = node_model("STFT", feeds, inits, opset=17, input_names=names, onesided=int(parts == 1))
    check_lowering(model, feeds, rtol=SPECTRAL_TOL, atol=SPECTRAL_TOL)


def test_stft_with_the_default_onesided(rng):
    """onnx 1.23 infers a full spectrum where the schema's default (onesided=1) asks for
    half; the importer spells the default out for inference, so the half spectrum it is
    (an untyped model: node_model's own onnx inference would type it 16 bins)."""
    feeds = {"x": _f(rng, 1, 64, 1)}
    model = single_node_model("STFT", feeds, initializers={"step": np.array(8, np.int64), "len": np.array(16, np.int64)},
                              opset=17, input_names=["x", "step", "", "len"])
    check_lowering(model, feeds, rtol=SPECTRAL_TOL, atol=SPECTRAL_TOL)


@pytest.mark.parametrize("bins,length,rate,low,high", [(8, 16, 8192, 0.0, 4096.0), (20, 64, 16000, 125.0, 7600.0)])
def test_mel_weight_matrix_matches_onnxruntime(bins, length, rate, low, high):
    """Sample rate and band limits stay runtime inputs; the bin count and length set the shape."""
    feeds = {"rate": np.array(rate, np.int32), "low": np.array(low, np.float32), "high": np.array(high, np.float32)}
    inits = {"bins": np.array(bins, np.int32), "len": np.array(length, np.int32)}
    model = node_model("MelWeightMatrix", feeds, inits, opset=17, input_names=["bins", "len", "rate", "low", "high"])
    check_lowering(model, feeds)


# -- GridSample, AffineGrid, RoiAlign, MaxUnpool ------------------------------------------------
# Tolerance RTOL/ATOL (1e-5) against onnxruntime; bicubic with border padding, where
# onnxruntime and ONNX's reference differ (onnxruntime does not clamp the coordinate
# before taking the 4 x 4 taps), against the reference, as is a MaxUnpool whose
# output_shape is larger than the unpooled shape (onnxruntime reads the indices in it).
# AffineGrid over a one-pixel dimension with align_corners is left out: onnxruntime
# (1), PyTorch (0) and ONNX's reference (-1, which einc follows) disagree.

GRID_MODES = [(m, p, a) for m in ("bilinear", "nearest", "bicubic") for p in ("zeros", "border", "reflection") for a in (0, 1)]


@pytest.mark.parametrize("mode,padding,align", GRID_MODES)
def test_grid_sample_2d_matches_onnxruntime(rng, mode, padding, align):
    feeds = {"x": _f(rng, 2, 3, 4, 5), "grid": _f(rng, 2, 3, 6, 2, low=-1.3, high=1.3)}
    model = node_model("GridSample", feeds, opset=16, mode=mode, padding_mode=padding, align_corners=align)
    if mode == "bicubic" and padding == "border":
        model = node_model("GridSample", feeds, opset=20, mode="cubic", padding_mode=padding, align_corners=align)
        _check_against_reference(model, feeds)
    else:
        check_lowering(model, feeds, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode,padding", [("linear", "zeros"), ("nearest", "reflection"), ("linear", "border")])
def test_grid_sample_3d_and_1x1_images_match_onnxruntime(rng, mode, padding):
    volume = {"x": _f(rng, 1, 2, 3, 4, 5), "grid": _f(rng, 1, 2, 3, 2, 3, low=-1.2, high=1.2)}
    check_lowering(node_model("GridSample", volume, opset=22, mode=mode, padding_mode=padding), volume)
    dot = {"x": _f(rng, 1, 2, 1, 1), "grid": _f(rng, 1, 2, 2, 2, low=-1.2, high=1.2)}
    check_lowering(node_model("GridSample", dot, opset=22, mode=mode, padding_mode=padding, align_corners=1), dot)


@pytest.mark.parametrize("size,align", [([2, 3, 4, 5], 0), ([2, 3, 2, 6], 1), ([2, 3, 1, 6], 0), ([1, 2, 3, 4, 5], 0), ([1, 2, 3, 4, 5], 1)])
def test_affine_grid_matches_onnxruntime(rng, size, align):
    r = len(size) - 2
    feeds = {"theta": _f(rng, size[0], r, r + 1)}
    model = node_model("AffineGrid", feeds, {"size": np.array(size, np.int64)}, opset=20, align_corners=align)
    check_lowering(model, feeds)


def _rois(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Boxes [x1, y1, x2, y2], some reaching past the image."""
    x1, y1 = rng.uniform(-2, width - 1, n), rng.uniform(-2, height - 1, n)
    return np.stack([x1, y1, x1 + rng.uniform(0.5, 6, n), y1 + rng.uniform(0.5, 6, n)], 1).astype(np.float32)


@pytest.mark.parametrize("attrs", [
    {"sampling_ratio": 2},
    {"sampling_ratio": 2, "mode": "max"},
    {"sampling_ratio": 3, "coordinate_transformation_mode": "output_half_pixel", "spatial_scale": 0.5},
    {"sampling_ratio": 1, "mode": "max", "output_height": 2, "output_width": 4},
], ids=["avg", "max", "output-half-pixel-scaled", "max-one-sample-wide"])
def test_roi_align_matches_onnxruntime(rng, attrs):
    attrs = {"output_height": 3, "output_width": 3, **attrs}
    feeds = {"x": _f(rng, 2, 3, 7, 8), "rois": _rois(rng, 5, 7, 8), "batch": np.array([0, 1, 1, 0, 1], np.int64)}
    check_lowering(node_model("RoiAlign", feeds, opset=16, **attrs), feeds)


def test_roi_align_with_an_adaptive_sampling_ratio_is_unsupported(rng):
    feeds = {"x": _f(rng, 1, 1, 4, 4), "rois": _rois(rng, 2, 4, 4), "batch": np.zeros(2, np.int64)}
    _expect_unsupported(node_model("RoiAlign", feeds, opset=16), "roialign_node", "sampling_ratio 0")


def _pool_indices(rng: np.random.Generator, shape: tuple[int, ...], stride: int, out: tuple[int, ...]) -> np.ndarray:
    """Flat MaxPool indices: one place per stride x stride window of an `out`-shaped tensor."""
    n, c, h, w = shape
    dy, dx = rng.integers(0, stride, shape), rng.integers(0, stride, shape)
    rows = np.arange(h)[:, None] * stride + dy
    cols = np.arange(w)[None, :] * stride + dx
    planes = (np.arange(n)[:, None] * c + np.arange(c)[None, :])[:, :, None, None]
    return (planes * out[2] * out[3] + rows * out[3] + cols).astype(np.int64)


def test_max_unpool_matches_onnxruntime(rng):
    feeds = {"x": _f(rng, 2, 3, 3, 4), "i": _pool_indices(rng, (2, 3, 3, 4), 2, (2, 3, 6, 8))}
    check_lowering(node_model("MaxUnpool", feeds, kernel_shape=[2, 2], strides=[2, 2], opset=11), feeds)
    padded = {"x": _f(rng, 1, 2, 3, 3), "i": _pool_indices(rng, (1, 2, 3, 3), 2, (1, 2, 5, 5))}
    check_lowering(node_model("MaxUnpool", padded, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], opset=22), padded)


def test_max_unpool_to_a_larger_output_shape_follows_onnx_reference(rng):
    feeds = {"x": _f(rng, 1, 2, 2, 2), "i": _pool_indices(rng, (1, 2, 2, 2), 2, (1, 2, 4, 4))}
    model = node_model("MaxUnpool", feeds, {"shape": np.array([1, 2, 5, 6], np.int64)}, kernel_shape=[2, 2], strides=[2, 2], opset=22)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", onnx.TensorProto.FLOAT, [1, 2, 5, 6]))  # inference leaves it open
    _check_against_reference(model, feeds)
