"""Rewrite matmuls of two quantized activations (attention's QK^T and PV) into integer kernels.

Pattern (QDQ MatMul without a constant operand):
    matmul(dequantize(a, sa, za), dequantize(b, sb, zb))  [quantize(., so, zo)]
with a, b uint8/int8 activations of equal batch dimensions and per-tensor scales. The product
becomes one u8 x s8 -> int32 kernel per call with the requantize (or dequantize) epilogue
(schedules/u8s8_batch_matmul.py). b is handed over as it is, [batch, K, N], unless the graph
made it by swapping the two last axes of a tensor (K^T in QK^T): then it goes transposed back,
[batch, N, K], and the two transposes cancel in the copy that produces it (a copy along the
innermost axis instead of a transpose). Matmuls with a constant weight are QDQToInt8's. VNNI
targets only: elsewhere the float matmul stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from sparsec.schedules.u8s8_batch_matmul import Int8BatchMatmulShape, QuantizedOperand, supports_int8_batch_matmul, u8s8_batch_matmul_kernel
from sparsec.schedules.u8s8_matmul import Requantize, output_dtype

from .dataflow import BindingRewriter, Dataflow, bound_value, constant_array, is_op, rewrite_functions
from .qdq_to_int8 import output_quantization, quantized_activations


@dataclass
class _BatchMatmul:
    lhs: relax.Expr
    rhs: relax.Expr
    lhs_quantization: QuantizedOperand
    rhs_quantization: QuantizedOperand
    shape: Int8BatchMatmulShape
    requantize: Requantize | None
    out_shape: tuple[int, ...]
    rhs_layout: str  # "kn" (as it is) or "nk" (transposed back)


@tvm.transform.module_pass(opt_level=0, name="sparsec.QDQBatchMatmulToInt8")
class QDQBatchMatmulToInt8:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod), mod)


def _find_matmuls(graph: Dataflow) -> dict[relax.Var, _BatchMatmul]:
    found = {}
    for var, value in graph.bindings.items():
        if not is_op(value, "relax.matmul"):
            continue
        operands = [_activation_operand(arg, graph.bindings) for arg in value.args]
        if None in operands:
            continue
        (lhs, lhs_quantization), (rhs, rhs_quantization) = operands
        shape = _batch_shape(lhs, rhs)
        if shape is None or not supports_int8_batch_matmul(shape):
            continue
        end, requantize = var, None
        if (quantize := graph.only_user_call(var, "relax.quantize")) is not None:
            requantize = output_quantization(graph.bindings[quantize], graph.bindings)
            end = quantize if requantize is not None else end
        out_shape = tuple(int(d) for d in value.ty.shape.values)
        found[end] = _BatchMatmul(lhs, rhs, lhs_quantization, rhs_quantization, shape, requantize, out_shape, _rhs_layout(rhs, graph.bindings))
    return found


def _rhs_layout(rhs: relax.Expr, bindings) -> str:
    """The kernel's layout for rhs: "nk" when rhs is a permute_dims that moved its input's
    innermost axis to the second last (transposing it back cancels that), "kn" otherwise."""
    value = bound_value(rhs, bindings)
    if not is_op(value, "relax.permute_dims") or value.attrs.axes is None:
        return "kn"
    axes = [int(axis) for axis in value.attrs.axes]
    innermost = len(axes) - 1
    return "nk" if axes[-2] == innermost and axes[-1] != innermost else "kn"


def _activation_operand(expr: relax.Expr, bindings) -> tuple[relax.Expr, QuantizedOperand] | None:
    """(q, its quantization) for dequantize(q) of a non-constant per-tensor quantized tensor."""
    activations = quantized_activations(expr, bindings)
    if activations is None:
        return None
    data, zero_point, scale = activations
    if constant_array(data, bindings) is not None:
        return None  # a weight: QDQToInt8's
    return data, QuantizedOperand(str(data.ty.dtype), scale, zero_point)


def _batch_shape(lhs: relax.Expr, rhs: relax.Expr) -> Int8BatchMatmulShape | None:
    """[..., M, K] x [..., K, N] with the same static batch dimensions (no broadcasting)."""
    dims = []
    for operand in (lhs, rhs):
        shape = operand.ty.shape
        if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
            return None
        dims.append([int(d) for d in shape.values])
    (*lhs_batch, m, k), (*rhs_batch, k_rhs, n) = dims
    if len(dims[0]) < 2 or lhs_batch != rhs_batch or k != k_rhs:
        return None
    return Int8BatchMatmulShape(int(np.prod(lhs_batch, dtype=np.int64)), m, k, n)


@mutator
class _Rewriter(BindingRewriter):
    def __init__(self, mod):
        super().__init__(mod)
        self.matmuls: dict[relax.Var, _BatchMatmul] = {}

    def prepare(self, graph: Dataflow) -> None:
        self.matmuls = _find_matmuls(graph)

    def rewrite(self, binding) -> relax.Expr | None:
        matmul = self.matmuls.get(binding.var)
        if matmul is None:
            return None
        shape = matmul.shape
        lhs = self.builder_.emit(relax.op.reshape(self.visit_expr(matmul.lhs), (shape.batch, shape.m, shape.k)))
        rhs = self.visit_expr(matmul.rhs)
        if matmul.rhs_layout == "nk":
            rank = len(matmul.out_shape)
            rhs = self.builder_.emit(relax.op.reshape(relax.op.permute_dims(rhs, [*range(rank - 2), rank - 1, rank - 2]), (shape.batch, shape.n, shape.k)))
        else:
            rhs = self.builder_.emit(relax.op.reshape(rhs, (shape.batch, shape.k, shape.n)))
        func = u8s8_batch_matmul_kernel(shape, matmul.lhs_quantization, matmul.rhs_quantization, matmul.requantize, rhs_layout=matmul.rhs_layout)
        suffix = "_requantize" if matmul.requantize is not None else ""
        kernel = self.builder_.add_func(func, f"u8s8_batch_matmul_vnni{suffix}")
        dtype = output_dtype(matmul.requantize, None)
        product = self.builder_.emit(
            relax.call_tir(kernel, relax.Tuple([lhs, rhs]), relax.TensorType((shape.batch, shape.m, shape.n), dtype))
        )
        return relax.op.reshape(product, matmul.out_shape)
