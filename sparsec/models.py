"""Synthetic ONNX models built from scratch (no downloads): MLPs and BERT-shaped encoders.

Used by the bundled example, the tests and the benchmarks. Weights are random; `prune` zeroes the
smallest-magnitude weights of every linear layer, the way a pruning tool exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR of opset 17; onnxruntime refuses IRs newer than it knows


class _GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, seed: int, weights: dict[str, np.ndarray] | None = None):
        self.rng = np.random.default_rng(seed)
        self.weights = weights or {}  # trained values that replace the random ones, by name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def constant(self, name: str, value: np.ndarray) -> str:
        if name in self.weights:
            given = np.asarray(self.weights[name], np.float32)
            if given.shape != np.shape(value):
                raise ValueError(f"weight {name!r}: expected shape {np.shape(value)}, got {given.shape}")
            value = given
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def random_weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        value = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        return self.constant(name, value)

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        output = self.fresh(name)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def rename_last_output(self, name: str) -> str:
        self.nodes[-1].output[0] = name
        return name

    def model(self, name, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
        model.producer_name = "sparsec.models"
        onnx.checker.check_model(model)
        return model


def mlp(
    dims: tuple[int, ...] = (784, 2048, 2048, 10),
    batch: int | str = 1,
    form: str = "gemm",
    seed: int = 0,
) -> onnx.ModelProto:
    """A ReLU MLP. form="gemm" uses Gemm(transB=1) layers, form="matmul" uses MatMul + Add."""
    if form not in ("gemm", "matmul"):
        raise ValueError(f"form must be 'gemm' or 'matmul', not {form!r}")
    g = _GraphBuilder(seed)
    x = "input"
    last = len(dims) - 2
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        scale = 1.0 / math.sqrt(fan_in)
        bias = g.random_weight(f"fc{i}.bias", (fan_out,), 0.1)
        if form == "gemm":
            weight = g.random_weight(f"fc{i}.weight", (fan_out, fan_in), scale)
            x = g.op("Gemm", [x, weight, bias], f"fc{i}", transB=1)
        else:
            weight = g.random_weight(f"fc{i}.weight", (fan_in, fan_out), scale)
            x = g.op("Add", [g.op("MatMul", [x, weight], f"fc{i}"), bias], f"fc{i}.add")
        if i < last:
            x = g.op("Relu", [x], f"relu{i}")
    x = g.rename_last_output("logits")
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, dims[0]])]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, dims[-1]])]
    return g.model("mlp", inputs, outputs)


@dataclass(frozen=True)
class EncoderConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    vocab: int = 30522
    max_positions: int = 512


BERT_BASE = EncoderConfig()


def transformer_encoder(
    config: EncoderConfig = BERT_BASE,
    seq: int | str = 128,
    batch: int | str = 1,
    seed: int = 0,
    weights: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A BERT-shaped encoder: token + position embeddings, then post-LN layers of multi-head
    attention (MatMul, Softmax) and an Erf-GELU feed-forward block, as PyTorch exports them.
    Random weights unless `weights` gives them by name (see `bert_encoder_from_safetensors`)."""
    g = _GraphBuilder(seed, weights)
    h, heads = config.hidden, config.heads
    head_dim = h // heads
    ids = "input_ids"
    word = g.random_weight("embeddings.word", (config.vocab, h), 0.02)
    positions = g.random_weight("embeddings.position", (config.max_positions, h), 0.02)
    seq_len = g.op("Shape", [ids], "seq_len", start=1, end=2)
    zero = g.constant("zero", np.array([0], np.int64))
    axes = g.constant("axes0", np.array([0], np.int64))
    pos = g.op("Slice", [positions, zero, seq_len, axes], "embeddings.position_slice")
    x = g.op("Add", [g.op("Gather", [word, ids], "embeddings.gather"), pos], "embeddings.add")
    x = _layer_norm(g, x, h, "embeddings.ln")

    split_heads = g.constant("split_heads", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.constant("merge_heads", np.array([0, 0, h], np.int64))
    inv_sqrt_d = g.constant("inv_sqrt_d", np.array(1.0 / math.sqrt(head_dim), np.float32))
    for i in range(config.layers):
        p = f"layer{i}"

        def heads_of(name: str, perm: list[int]) -> str:
            y = _linear(g, x, h, h, f"{p}.attn.{name}")
            y = g.op("Reshape", [y, split_heads], f"{p}.attn.{name}.split")
            return g.op("Transpose", [y], f"{p}.attn.{name}.transpose", perm=perm)

        q = heads_of("q", [0, 2, 1, 3])
        k = heads_of("k", [0, 2, 3, 1])
        v = heads_of("v", [0, 2, 1, 3])
        scores = g.op("Mul", [g.op("MatMul", [q, k], f"{p}.attn.qk"), inv_sqrt_d], f"{p}.attn.scale")
        probs = g.op("Softmax", [scores], f"{p}.attn.softmax", axis=-1)
        ctx = g.op("MatMul", [probs, v], f"{p}.attn.pv")
        ctx = g.op("Transpose", [ctx], f"{p}.attn.merge.transpose", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads], f"{p}.attn.merge")
        attn = _linear(g, ctx, h, h, f"{p}.attn.out")
        x = _layer_norm(g, g.op("Add", [x, attn], f"{p}.attn.residual"), h, f"{p}.attn.ln")

        ff = _gelu(g, _linear(g, x, h, config.ffn, f"{p}.ffn.up"), f"{p}.ffn.gelu")
        ff = _linear(g, ff, config.ffn, h, f"{p}.ffn.down")
        x = _layer_norm(g, g.op("Add", [x, ff], f"{p}.ffn.residual"), h, f"{p}.ffn.ln")
    x = g.rename_last_output("last_hidden_state")

    inputs = [helper.make_tensor_value_info(ids, TensorProto.INT64, [batch, seq])]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, seq, h])]
    model = g.model("transformer_encoder", inputs, outputs)
    model.metadata_props.add(key="vocab_size", value=str(config.vocab))
    return model


def _linear(g: _GraphBuilder, x: str, fan_in: int, fan_out: int, name: str) -> str:
    weight = g.random_weight(f"{name}.weight", (fan_in, fan_out), 1.0 / math.sqrt(fan_in))
    bias = g.random_weight(f"{name}.bias", (fan_out,), 0.02)
    return g.op("Add", [g.op("MatMul", [x, weight], name), bias], f"{name}.bias_add")


def _layer_norm(g: _GraphBuilder, x: str, h: int, name: str) -> str:
    scale = g.constant(f"{name}.weight", (1.0 + 0.1 * g.rng.standard_normal(h)).astype(np.float32))
    bias = g.random_weight(f"{name}.bias", (h,), 0.1)
    return g.op("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-12)


def _gelu(g: _GraphBuilder, x: str, name: str) -> str:
    sqrt2 = g.constant(f"{name}.sqrt2", np.array(math.sqrt(2.0), np.float32))
    one = g.constant(f"{name}.one", np.array(1.0, np.float32))
    half = g.constant(f"{name}.half", np.array(0.5, np.float32))
    erf = g.op("Erf", [g.op("Div", [x, sqrt2], f"{name}.div")], f"{name}.erf")
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, one], f"{name}.add")], f"{name}.mul"), half], name)


def prune(model: onnx.ModelProto, sparsity: float, block: tuple[int, int] = (1, 1)) -> onnx.ModelProto:
    """Magnitude-prune the weight of every MatMul/Gemm and 1x1 Conv, per layer: the blocks of
    smallest L1 norm become exact zeros. `block` is (along the output axis, along the reduction
    axis), whatever the orientation the weight is stored in: (4, 1) is 4 output rows, (1, 4) 4
    reduction steps."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    stored_as_output_major = {}  # weight name -> whether rows are output channels
    for node in pruned.graph.node:
        if node.op_type == "MatMul":
            stored_as_output_major[node.input[1]] = False  # x @ W: W is [reduction, output]
        elif node.op_type == "Gemm":
            stored_as_output_major[node.input[1]] = any(a.name == "transB" and a.i for a in node.attribute)
        elif node.op_type == "Conv":
            stored_as_output_major[node.input[1]] = True  # [out, in, kh, kw]; only 1x1 kernels below
    for init in pruned.graph.initializer:
        pointwise = len(init.dims) == 4 and tuple(init.dims[2:]) == (1, 1)
        if init.name in stored_as_output_major and (len(init.dims) == 2 or pointwise):
            weight = numpy_helper.to_array(init)
            matrix = weight.reshape(weight.shape[:2])
            if stored_as_output_major[init.name]:
                matrix = _prune_array(matrix, sparsity, block)
            else:
                matrix = _prune_array(matrix.T, sparsity, block).T
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(matrix).reshape(weight.shape), init.name))
    return pruned


def _prune_array(w: np.ndarray, sparsity: float, block: tuple[int, int]) -> np.ndarray:
    br, bc = block
    rows, cols = -(-w.shape[0] // br) * br, -(-w.shape[1] // bc) * bc
    padded = np.zeros((rows, cols), w.dtype)
    padded[: w.shape[0], : w.shape[1]] = w
    norms = np.abs(padded).reshape(rows // br, br, cols // bc, bc).sum(axis=(1, 3))
    n_pruned = int(round(sparsity * norms.size))
    keep = np.ones(norms.size, bool)
    keep[np.argsort(norms, axis=None, kind="stable")[:n_pruned]] = False
    mask = np.repeat(np.repeat(keep.reshape(norms.shape), br, axis=0), bc, axis=1)
    return np.where(mask[: w.shape[0], : w.shape[1]], w, 0).astype(w.dtype)


def quantize_qdq(
    source: str | Path,
    target: str | Path,
    samples: int = 8,
    per_channel: bool = False,
    activations: str = "uint8",
) -> None:
    """Static QDQ quantization with onnxruntime.quantization, as users export them: `activations`
    uint8 or int8 (with zero points), symmetric int8 weights, per tensor or per output channel
    (zeros stay exactly zero), calibrated on `samples` random inputs (token ids within the
    model's `vocab_size`)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class RandomReader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(_random_samples(onnx.load(str(source), load_external_data=False), samples))

        def get_next(self):
            return next(self.samples, None)

    quantize_static(
        str(source),
        str(target),
        RandomReader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
    )


def _random_samples(model: onnx.ModelProto, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    vocab = next((int(p.value) for p in model.metadata_props if p.key == "vocab_size"), 2)
    weights = {init.name for init in model.graph.initializer}  # IR < 4 lists them as inputs too
    samples = []
    for _ in range(count):
        feeds = {}
        for value in (v for v in model.graph.input if v.name not in weights):
            shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
            if value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
                feeds[value.name] = rng.integers(0, vocab, shape).astype(np.int64)
            else:
                feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        samples.append(feeds)
    return samples


def bert_encoder_from_safetensors(model_dir: str | Path, seq: int) -> onnx.ModelProto:
    """A Hugging Face BERT checkpoint (config.json + model.safetensors, e.g. all-MiniLM-L6-v2) as
    `transformer_encoder`'s graph with the trained weights: last_hidden_state for input_ids of
    one sequence of `seq` tokens, all of token type 0, no padding (so no attention mask)."""
    import json

    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    hf = json.loads((model_dir / "config.json").read_text())
    config = EncoderConfig(hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"], hf["intermediate_size"], hf["vocab_size"], hf["max_position_embeddings"])
    tensors = {name.removeprefix("bert."): value for name, value in load_file(str(model_dir / "model.safetensors")).items()}
    weights = {
        "embeddings.word": tensors["embeddings.word_embeddings.weight"],
        # token type 0 everywhere: its embedding row is a constant added to every position
        "embeddings.position": tensors["embeddings.position_embeddings.weight"] + tensors["embeddings.token_type_embeddings.weight"][0],
        "embeddings.ln.weight": tensors["embeddings.LayerNorm.weight"],
        "embeddings.ln.bias": tensors["embeddings.LayerNorm.bias"],
    }
    linear = {"attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value", "attn.out": "attention.output.dense", "ffn.up": "intermediate.dense", "ffn.down": "output.dense"}
    norms = {"attn.ln": "attention.output.LayerNorm", "ffn.ln": "output.LayerNorm"}
    for i in range(config.layers):
        for ours, theirs in linear.items():
            weights[f"layer{i}.{ours}.weight"] = tensors[f"encoder.layer.{i}.{theirs}.weight"].T  # [out, in] -> [in, out]
            weights[f"layer{i}.{ours}.bias"] = tensors[f"encoder.layer.{i}.{theirs}.bias"]
        for ours, theirs in norms.items():
            weights[f"layer{i}.{ours}.weight"] = tensors[f"encoder.layer.{i}.{theirs}.weight"]
            weights[f"layer{i}.{ours}.bias"] = tensors[f"encoder.layer.{i}.{theirs}.bias"]
    return transformer_encoder(config, seq=seq, batch=1, weights=weights)
