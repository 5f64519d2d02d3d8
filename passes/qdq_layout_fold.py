"""Move layout ops between a DequantizeLinear and a QuantizeLinear of the same parameters onto
the quantized bytes.

Pattern (onnxruntime.quantization puts a Q/DQ pair after every reshape and transpose):
    quantize(layout(...layout(dequantize(q, s, z))), s, z)  ->  layout(...layout(q))
with per-tensor s, z and layout = reshape | permute_dims. Exact: dequantizing and quantizing
again with the same scale and zero point gives back q. The attention's head split and merge
(reshape, transpose) then move bytes instead of dequantizing, dividing and rounding each element
on the way, and what remains of the chain (the bias add) is element-wise.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from .dataflow import BindingRewriter, bound_value, is_op, per_tensor_quantization, rewrite_functions

LAYOUT_OPS = ("relax.reshape", "relax.permute_dims")


@tvm.transform.module_pass(opt_level=0, name="sparsec.QDQLayoutFold")
class QDQLayoutFold:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod), mod)


def _layout_chain(quantize: relax.Call, bindings) -> tuple[relax.Expr, list[relax.Call]] | None:
    """(q, the layout calls from q outwards) when quantize's input is layout ops over a
    dequantize(q) with the same per-tensor scale, zero point and dtype; None otherwise."""
    params = per_tensor_quantization(quantize, bindings)
    layout, value = [], bound_value(quantize.args[0], bindings)
    while any(is_op(value, name) for name in LAYOUT_OPS):
        layout.append(value)
        value = bound_value(value.args[0], bindings)
    if not layout or not is_op(value, "relax.dequantize") or params is None:
        return None
    source = value.args[0]
    if per_tensor_quantization(value, bindings) != params or str(source.ty.dtype) != str(quantize.attrs.out_dtype):
        return None
    return source, layout[::-1]


@mutator
class _Rewriter(BindingRewriter):
    def rewrite(self, binding) -> relax.Expr | None:
        chain = _layout_chain(binding.value, self.bindings) if is_op(binding.value, "relax.quantize") else None
        if chain is None:
            return None
        source, layout = chain
        data = self.visit_expr(source)
        for call in layout[:-1]:
            data = self.builder_.emit(relax.Call(call.op, [data, *call.args[1:]], call.attrs))
        last = layout[-1]
        return relax.Call(last.op, [data, *last.args[1:]], last.attrs)
