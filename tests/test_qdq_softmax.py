"""Softmax between quantized tensors on bytes (passes/qdq_softmax.py,
schedules/u8_softmax.py): within one output step of onnx's reference evaluator on the QDQ
graph, and left as float softmax where the pattern does not hold."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OUT_SCALE = 1 / 255


def _qdq_softmax(dtype: int, shape=(1, 2, 16, 32), axis=-1, out_scale=OUT_SCALE):
    signed = dtype == TensorProto.INT8
    initializers = [
        numpy_helper.from_array(np.array(0.061, np.float32), "x_s"),
        helper.make_tensor("x_z", dtype, [], [-9 if signed else 119]),
        numpy_helper.from_array(np.array(out_scale, np.float32), "p_s"),
        helper.make_tensor("p_z", dtype, [], [-128 if signed else 0]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("Softmax", ["x_dq"], ["p"], axis=axis),
        helper.make_node("QuantizeLinear", ["p", "p_s", "p_z"], ["p_q"]),
        helper.make_node("DequantizeLinear", ["p_q", "p_s", "p_z"], ["p_dq"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("p_dq", TensorProto.FLOAT, list(shape))],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _byte_kernels(result) -> int:
    return sum(rule == "U8Softmax" for rule in result.schedules.values())


def _compare(compiled, model):
    feeds = {"x": np.random.default_rng(0).normal(0, 3, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)}
    ours, reference = compiled.run(None, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0]
    assert np.abs(ours - reference).max() <= OUT_SCALE * 1.001  # one step, at rounding ties
    assert np.mean(ours != reference) < 0.01


@pytest.mark.parametrize("dtype", [TensorProto.UINT8, TensorProto.INT8])
def test_quantized_softmax_runs_on_bytes_and_matches_the_reference(compile_onnx, dtype):
    model = _qdq_softmax(dtype)
    compiled, result = compile_onnx(model)
    assert _byte_kernels(result) == 1
    _compare(compiled, model)


@pytest.mark.parametrize(("shape", "axis"), [((1, 2, 16, 30), -1), ((1, 2, 16, 32), 2)])
def test_other_softmaxes_stay_float(compile_onnx, shape, axis):
    model = _qdq_softmax(TensorProto.UINT8, shape, axis)
    compiled, result = compile_onnx(model)
    assert _byte_kernels(result) == 0
    _compare(compiled, model)


def test_targets_without_avx512_keep_the_float_softmax(compile_onnx):
    model = _qdq_softmax(TensorProto.UINT8)
    compiled, result = compile_onnx(model, "haswell", target="llvm -mcpu=haswell")
    assert _byte_kernels(result) == 0
    _compare(compiled, model)


@pytest.mark.parametrize("scale", [0.003, 0.061, 0.35])
def test_split_exp_tables_give_every_byte_difference_within_two_ulps(scale):
    from sparsec.schedules.u8_softmax import TABLE_LANES, exp_tables

    tables = exp_tables(scale)
    differences = np.arange(256)
    products = tables[differences >> 4] * tables[TABLE_LANES + (differences & 15)]
    exact = np.exp(-np.float64(scale) * differences)
    assert np.all(np.abs(products - exact) <= 2 * np.spacing(exact.astype(np.float32)))
