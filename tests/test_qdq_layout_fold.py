"""Layout ops between a DequantizeLinear and a QuantizeLinear of the same parameters move onto
the quantized bytes (passes/qdq_layout_fold.py): Before/Expected modules, and an
onnxruntime-style head split (reshape, transpose, a Q/DQ pair after each) exact against onnx's
reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from tvm import relax

from sparsec.passes.qdq_layout_fold import QDQLayoutFold


def _scalar(value, dtype):
    return relax.const(np.array(value, dtype))


def _head_split(scale_after: float = 0.05, dtype_after: str = "uint8", folded: bool = False) -> tvm.IRModule:
    """q [8, 12] -> dequantize -> reshape [8, 3, 4] -> transpose -> quantize (scale_after);
    `folded`: what the pass should make of it when the parameters match."""
    builder = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((8, 12), "uint8"))
    with builder.function("main", [q]):
        with builder.dataflow():
            if folded:
                x = builder.emit(relax.op.reshape(q, (8, 3, 4)))
                out = builder.emit_output(relax.op.permute_dims(x, [1, 0, 2]))
            else:
                x = builder.emit(relax.op.dequantize(q, _scalar(0.05, "float32"), _scalar(7, "uint8")))
                x = builder.emit(relax.op.reshape(x, (8, 3, 4)))
                x = builder.emit(relax.op.permute_dims(x, [1, 0, 2]))
                out = builder.emit_output(relax.op.quantize(x, _scalar(scale_after, "float32"), _scalar(7, dtype_after), out_dtype=dtype_after))
        builder.emit_func_output(out)
    return builder.get()


def test_layout_between_equal_quantizations_moves_onto_the_bytes():
    assert tvm_ffi.structural_equal(QDQLayoutFold()(_head_split()), _head_split(folded=True), map_free_vars=True)


@pytest.mark.parametrize(("scale", "dtype"), [(0.06, "uint8"), (0.05, "int8")])
def test_a_requantization_to_other_parameters_stays(scale, dtype):
    before = _head_split(scale, dtype)
    assert tvm_ffi.structural_equal(QDQLayoutFold()(before), before)


def test_onnxruntime_style_head_split_is_exact(compile_onnx):
    nodes, initializers = [], [
        numpy_helper.from_array(np.array(0.043, np.float32), "s"),
        helper.make_tensor("z", TensorProto.UINT8, [], [131]),
        numpy_helper.from_array(np.array([1, 16, 4, 8], np.int64), "heads"),
    ]

    def qdq(name):
        nodes.append(helper.make_node("QuantizeLinear", [name, "s", "z"], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_dq"]))
        return f"{name}_dq"

    x = qdq("x")
    nodes.append(helper.make_node("Reshape", [x, "heads"], ["split"]))
    split = qdq("split")
    nodes.append(helper.make_node("Transpose", [split], ["heads_first"], perm=[0, 2, 1, 3]))
    output = qdq("heads_first")
    graph = helper.make_graph(
        nodes,
        "head_split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 4, 16, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    compiled, result = compile_onnx(model)
    # one quantize of the input, bytes moved, one dequantize of the output: no float round trips
    assert list(result.schedules) == ["fused_quantize_reshape_transpose_dequantize"]
    feeds = {"x": np.random.default_rng(0).normal(0, 2, (1, 16, 32)).astype(np.float32)}
    np.testing.assert_array_equal(compiled.run(None, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0])
