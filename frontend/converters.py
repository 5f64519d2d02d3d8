"""ONNX ops TVM's Relax importer lacks, converted by sparsec.

TVM looks its converters up through `onnx_frontend._get_convert_map()` on every import, so the
table is extended by wrapping that function (there is no registration hook). Each converter
lowers to ops the rest of the pipeline already understands; QLinearMatMul becomes
dequantize -> matmul -> quantize, which passes/qdq_to_int8.py turns into one integer kernel.
"""

from __future__ import annotations

from functools import wraps

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter


class QLinearMatMul(OnnxOpConverter):
    """y = quantize(dequantize(a) @ dequantize(b), y_scale, y_zero_point); b's scale may be per
    output column."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = inputs
        a_float = relax.op.dequantize(a, a_scale, a_zero, axis=-1)
        b_float = relax.op.dequantize(b, b_scale, b_zero, axis=-1)  # [K, N]: per-column scales on N
        y = bb.emit(relax.op.matmul(bb.emit(a_float), bb.emit(b_float)))
        return relax.op.quantize(y, y_scale, y_zero, axis=-1, out_dtype=str(y_zero.ty.dtype))


CONVERTERS = {"QLinearMatMul": QLinearMatMul}


def install() -> None:
    """Add CONVERTERS to TVM's table (idempotent)."""
    original = onnx_frontend._get_convert_map
    if getattr(original, "sparsec_converters", False):
        return

    @wraps(original)
    def convert_map():
        return {**original(), **CONVERTERS}

    convert_map.sparsec_converters = True
    onnx_frontend._get_convert_map = convert_map
