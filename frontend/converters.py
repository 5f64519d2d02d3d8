"""ONNX ops TVM's Relax importer lacks, converted by sparsec.

TVM looks its converters up through `onnx_frontend._get_convert_map()` on every import, so the
table is extended by wrapping that function (there is no registration hook). Each converter
lowers to ops the rest of the pipeline already understands: QLinearMatMul and QLinearConv become
dequantize -> matmul/conv -> quantize, which passes/qdq_to_int8.py turns into one integer kernel;
ConvInteger becomes an int32 convolution of the zero-point-shifted inputs.
"""

from __future__ import annotations

from functools import wraps

import numpy as np
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import Conv, OnnxOpConverter


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


class QLinearConv(OnnxOpConverter):
    """y = quantize(conv(dequantize(x), dequantize(w)) + bias); w's scale may be per output
    channel; the int32 bias B is in units of x_scale * w_scale."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = inputs[:8]
        bias = inputs[8] if len(inputs) > 8 else None
        x_float = bb.emit(relax.op.dequantize(x, x_scale, x_zero, axis=1))
        w_float = bb.emit(relax.op.dequantize(w, w_scale, w_zero, axis=0))
        bias_float = None if bias is None else _dequantized_bias(bb, bias, x_scale, w_scale)
        y = bb.emit(Conv._impl_v11(bb, [x_float, w_float, bias_float], attr, params))
        return relax.op.quantize(y, y_scale, y_zero, axis=1, out_dtype=str(y_zero.ty.dtype))


def _dequantized_bias(bb, bias, x_scale, w_scale) -> relax.Expr:
    """B * x_scale * w_scale, folded to a float constant when all three are constants (as the
    integer pass needs it)."""
    if all(isinstance(e, Constant) for e in (bias, x_scale, w_scale)):
        values = bias.value.numpy().astype(np.float64) * x_scale.value.numpy().astype(np.float64) * w_scale.value.numpy().astype(np.float64)
        return relax.const(values.astype(np.float32))
    scale = bb.emit(relax.op.multiply(x_scale, w_scale))
    return bb.emit(relax.op.multiply(relax.op.astype(bias, "float32"), scale))


class ConvInteger(OnnxOpConverter):
    """int32 y = conv(x - x_zero_point, w - w_zero_point), exact in int32 arithmetic (a scalar
    or per-output-channel w zero point)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w = inputs[0], inputs[1]
        x_zero = inputs[2] if len(inputs) > 2 else None
        w_zero = inputs[3] if len(inputs) > 3 else None
        x_int = _minus_zero_point(bb, x, x_zero)
        w_int = _minus_zero_point(bb, w, w_zero, channel_axes=len(w.ty.shape.values))
        return Conv._impl_v11(bb, [x_int, w_int, None], attr, params)


def _minus_zero_point(bb, data, zero_point, channel_axes: int = 0) -> relax.Expr:
    """data - zero_point in int32; a 1-D zero point applies along axis 0 of `channel_axes` axes."""
    widened = bb.emit(relax.op.astype(data, "int32"))
    if zero_point is None:
        return widened
    zero = bb.emit(relax.op.astype(zero_point, "int32"))
    if channel_axes and zero.ty.ndim == 1:
        zero = bb.emit(relax.op.reshape(zero, [-1] + [1] * (channel_axes - 1)))
    return bb.emit(relax.op.subtract(widened, zero))


CONVERTERS = {"QLinearMatMul": QLinearMatMul, "QLinearConv": QLinearConv, "ConvInteger": ConvInteger}


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
