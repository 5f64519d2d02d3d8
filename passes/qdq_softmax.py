"""Rewrite a softmax between quantized tensors into a byte kernel.

Pattern (attention's QDQ softmax):
    quantize(softmax(dequantize(q, s, z), axis=-1), so, zo)
with per-tensor parameters, static shapes and rows of a multiple of 16. The exponentials of
the byte differences (qmax - q) come from tables built at compile time
(schedules/u8_softmax.py); the float input and output rows never exist. Outputs match the QDQ
graph within one output step (the order of the sum's float adds differs). AVX-512 targets only
(the kernel reads its tables with 512-bit vpermps); elsewhere the float softmax stays.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from sparsec.schedules.u8_softmax import LANES, exp_tables, u8_softmax_kernel

from .dataflow import BindingRewriter, bound_value, is_op, per_tensor_quantization, rewrite_functions
from .qdq_to_int8 import output_quantization


@tvm.transform.module_pass(opt_level=0, name="sparsec.QDQSoftmaxToInt8")
class QDQSoftmaxToInt8:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod), mod)


def _quantized_softmax(quantize: relax.Call, bindings):
    """(q, exp table, the output's Requantize) for the pattern; None otherwise."""
    output = output_quantization(quantize, bindings)
    softmax = bound_value(quantize.args[0], bindings)
    if output is None or not is_op(softmax, "relax.nn.softmax"):
        return None
    dequantize = bound_value(softmax.args[0], bindings)
    if not is_op(dequantize, "relax.dequantize") or (params := per_tensor_quantization(dequantize, bindings)) is None:
        return None
    source = dequantize.args[0]
    shape = source.ty.shape
    if str(source.ty.dtype) not in ("uint8", "int8") or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
        return None
    rank = len(shape.values)
    if int(softmax.attrs.axis) % rank != rank - 1 or int(shape.values[-1]) % LANES:
        return None
    scale, _ = params
    return source, exp_tables(scale), output


@mutator
class _Rewriter(BindingRewriter):
    def rewrite(self, binding) -> relax.Expr | None:
        found = _quantized_softmax(binding.value, self.bindings) if is_op(binding.value, "relax.quantize") else None
        if found is None:
            return None
        source, exp_table, output = found
        shape = [int(d) for d in source.ty.shape.values]
        length = shape[-1]
        rows = int(np.prod(shape)) // length
        kernel = self.builder_.add_func(u8_softmax_kernel(rows, length, str(source.ty.dtype), output), "u8_softmax")
        flat = self.builder_.emit(relax.op.reshape(self.visit_expr(source), (rows, length)))
        result = self.builder_.emit(
            relax.call_tir(kernel, relax.Tuple([flat, relax.const(exp_table)]), relax.TensorType((rows, length), output.dtype))
        )
        return relax.op.reshape(result, shape)
