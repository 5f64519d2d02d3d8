"""Matmuls of two quantized activations (attention's QK^T and PV) on the integer batched kernel
(passes/qdq_batch_matmul.py, schedules/u8s8_batch_matmul.py): the kernel against exact integer
arithmetic, QDQ graphs against onnx's reference evaluator within one output step, and the
float path kept where the target has no VNNI or the shapes do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from conftest import random_feeds
from onnx_zoo import onnxruntime_quantized_encoder, reference_outputs
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from test_int8 import _build

from sparsec import models
from sparsec.schedules.u8s8_batch_matmul import Int8BatchMatmulShape, QuantizedOperand, u8s8_batch_matmul_kernel
from sparsec.schedules.u8s8_matmul import Requantize

RNG = np.random.default_rng(0)
ONNX_DTYPES = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}


def _operand(dtype: str, scale: float) -> QuantizedOperand:
    info = np.iinfo(dtype)
    return QuantizedOperand(dtype, scale, int(RNG.integers(info.min, info.max)))


@pytest.mark.parametrize(("a_dtype", "b_dtype"), [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8"), ("int8", "uint8")])
@pytest.mark.parametrize("requantize", [None, Requantize(40.0, 3, "uint8"), Requantize(40.0, -3, "int8")])
@pytest.mark.parametrize("rhs_layout", ["nk", "kn"])
def test_batch_kernel_matches_integer_arithmetic(a_dtype, b_dtype, requantize, rhs_layout):
    shape = Int8BatchMatmulShape(batch=3, m=6, k=32, n=48)
    a, b = _operand(a_dtype, 0.02), _operand(b_dtype, 0.03)
    lhs = RNG.integers(np.iinfo(a_dtype).min, np.iinfo(a_dtype).max + 1, (shape.batch, shape.m, shape.k)).astype(a_dtype)
    rhs = RNG.integers(np.iinfo(b_dtype).min, np.iinfo(b_dtype).max + 1, (shape.batch, shape.k, shape.n)).astype(b_dtype)
    out = np.zeros((shape.batch, shape.m, shape.n), requantize.dtype if requantize else np.float32)
    rhs_operand = np.ascontiguousarray(rhs.transpose(0, 2, 1)) if rhs_layout == "nk" else rhs
    buffers = [tvm.runtime.tensor(x) for x in (lhs, rhs_operand, out)]
    _build(u8s8_batch_matmul_kernel(shape, a, b, requantize, rhs_layout=rhs_layout))["main"](*buffers)
    exact = ((lhs.astype(np.int64) - a.zero_point) @ (rhs.astype(np.int64) - b.zero_point)) * np.float64(np.float32(a.scale * b.scale))
    if requantize is None:
        np.testing.assert_allclose(buffers[2].numpy(), exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max())
    else:
        low, high = requantize.limits
        expected = np.clip(np.round(exact / requantize.scale) + requantize.zero_point, low, high)
        assert np.abs(buffers[2].numpy().astype(np.int32) - expected).max() <= 1  # float rounding at ties


def test_every_tile_of_the_tuning_space_matches_integer_arithmetic():
    from sparsec.schedules.tunable import families, tagged_task

    shape = Int8BatchMatmulShape(batch=2, m=8, k=32, n=128)
    a, b, requantize = _operand("uint8", 0.02), _operand("int8", 0.03), Requantize(40.0, 3, "uint8")
    lhs = RNG.integers(0, 256, (shape.batch, shape.m, shape.k)).astype(np.uint8)
    rhs_t = RNG.integers(-128, 128, (shape.batch, shape.n, shape.k)).astype(np.int8)
    family, workload, default_knobs = tagged_task(u8s8_batch_matmul_kernel(shape, a, b, requantize))
    space = families()[family].space(json.loads(workload))
    assert default_knobs in space and {"rows": 2, "blocks": 8} in space and len(space) > 8
    outputs = []
    for knobs in space:
        out = tvm.runtime.tensor(np.zeros((shape.batch, shape.m, shape.n), np.uint8))
        _build(families()[family].build(json.loads(workload), knobs))["main"](tvm.runtime.tensor(lhs), tvm.runtime.tensor(rhs_t), out)
        outputs.append(out.numpy())
    exact = ((lhs.astype(np.int64) - a.zero_point) @ (rhs_t.astype(np.int64) - b.zero_point).transpose(0, 2, 1)) * np.float64(np.float32(a.scale * b.scale))
    expected = np.clip(np.round(exact / requantize.scale) + requantize.zero_point, 0, 255)
    for knobs, out in zip(space, outputs):
        assert np.abs(out.astype(np.int32) - expected).max() <= 1, knobs
        np.testing.assert_array_equal(out, outputs[0])  # the tile changes the loop order, not the sums


def _attention_product(a_dtype: str, b_dtype: str, shapes=((1, 2, 16, 32), (1, 2, 32, 16)), quantized_output=True):
    """MatMul of two QDQ inputs, with the output QuantizeLinear/DequantizeLinear pair that
    onnxruntime.quantization writes after it."""
    nodes, initializers = [], []

    def qdq(name, dtype, scale, zero_point):
        initializers.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"), helper.make_tensor(f"{name}_z", ONNX_DTYPES[dtype], [], [zero_point])])
        nodes.append(helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
        return f"{name}_dq"

    lhs = qdq("a", a_dtype, 0.021, 121 if a_dtype == "uint8" else -7)
    rhs = qdq("b", b_dtype, 0.017, 133 if b_dtype == "uint8" else 5)
    nodes.append(helper.make_node("MatMul", [lhs, rhs], ["product"], name="qk"))
    output = qdq("product", "uint8", 0.13, 128) if quantized_output else "product"
    out_shape = [*shapes[0][:-1], shapes[1][-1]]
    graph = helper.make_graph(
        nodes,
        "attention_product",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in zip(("a", "b"), shapes)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _batch_kernels(result) -> int:
    return sum(rule == "U8S8BatchMatmulVNNI" for rule in result.schedules.values())


def _feeds(model) -> dict[str, np.ndarray]:
    return {i.name: RNG.normal(0, 1.5, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32) for i in model.graph.input}


@pytest.mark.parametrize(("a_dtype", "b_dtype"), [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8")])
@pytest.mark.parametrize("quantized_output", [True, False])
def test_qdq_attention_product_runs_integer_and_matches_the_reference(compile_onnx, a_dtype, b_dtype, quantized_output):
    model = _attention_product(a_dtype, b_dtype, quantized_output=quantized_output)
    compiled, result = compile_onnx(model)
    assert _batch_kernels(result) == 1
    feeds = _feeds(model)
    ours, reference = compiled.run(None, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0]
    if quantized_output:
        assert np.abs(ours - reference).max() <= 0.13 * 1.001  # one output step at most, at rounding ties
        assert np.mean(ours != reference) < 0.01
    else:
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_without_vnni_or_with_unfit_shapes_the_product_stays_float(compile_onnx):
    model = _attention_product("uint8", "uint8")
    _, result = compile_onnx(model, "skylake", target="llvm -mcpu=skylake-avx512")
    assert _batch_kernels(result) == 0
    ragged = _attention_product("uint8", "uint8", shapes=((1, 2, 16, 30), (1, 2, 30, 16)))  # K not a multiple of 16
    compiled, result = compile_onnx(ragged, "ragged")
    assert _batch_kernels(result) == 0
    feeds = _feeds(ragged)
    np.testing.assert_allclose(compiled.run(None, feeds)[0], ReferenceEvaluator(ragged).run(None, feeds)[0], atol=0.13 * 1.001)


def test_encoder_quantized_by_onnxruntime_runs_its_attention_on_integers(compile_onnx, tmp_path):
    """QK^T and PV of every layer of a BERT-shaped encoder (onnxruntime.quantization's QDQ) run on
    the integer kernel, and the model still follows the QDQ spec."""
    config = models.EncoderConfig(layers=2, hidden=64, heads=2, ffn=128, vocab=50, max_positions=32)
    model = onnxruntime_quantized_encoder(tmp_path, config)
    compiled, result = compile_onnx(model)
    assert _batch_kernels(result) == 2 * config.layers
    feeds = random_feeds(compiled, vocab=config.vocab)
    reference = reference_outputs(model, feeds)[0]
    assert np.abs(compiled.run(None, feeds)[0] - reference).max() <= 1e-3 * np.abs(reference).max()


def test_attention_operands_are_read_in_the_layout_their_producers_write(tmp_path):
    """K^T (the graph swapped K's last two axes) goes back to [N, K] and the two transposes cancel;
    V goes as it is, [K, N], so nothing transposes it."""
    import onnx

    from sparsec.driver import optimized_module
    from sparsec.passes.dataflow import call_tir_sites
    from sparsec.schedules.tunable import tagged_task
    from sparsec.target import parse_target

    config = models.EncoderConfig(layers=2, hidden=64, heads=2, ffn=128, vocab=50, max_positions=32)
    path = tmp_path / "qdq.onnx"
    onnx.save(onnxruntime_quantized_encoder(tmp_path, config), str(path))
    _, mod, _, _ = optimized_module(path, parse_target("native"), None, lambda _line: None, schedule=False)
    layouts = {}
    for call in call_tir_sites(mod):
        tagged = tagged_task(mod[call.args[0]])
        if tagged is not None and tagged[0] == "u8s8_batch_matmul":
            workload = json.loads(tagged[1])
            product = "QK^T" if workload["shape"]["n"] == workload["shape"]["m"] else "PV"  # seq 16, head 32
            layouts.setdefault(product, set()).add(workload.get("rhs_layout", "nk"))
    assert layouts == {"QK^T": {"nk"}, "PV": {"kn"}}
