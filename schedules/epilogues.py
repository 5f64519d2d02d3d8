"""Element-wise epilogues that kernels apply on their register tiles, as TIR expressions.

libm's erff is a scalar call that stops LLVM from vectorizing the tile, so GELU uses the same
rational approximation of erf as TVM's fast_erf (Eigen's, clamped to [-4, 4], ~1e-7 absolute).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import tirx
from tvm.script import tirx as T

ACTIVATIONS = ("relu", "gelu")

_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02)


def _horner(x: tirx.PrimExpr, coefficients) -> tirx.PrimExpr:
    value = T.float32(coefficients[0])
    for c in coefficients[1:]:
        value = value * x + T.float32(c)
    return value


def erf_f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    clamped = T.max(T.min(x, T.float32(4.0)), T.float32(-4.0))
    square = clamped * clamped
    return clamped * _horner(square, _ERF_NUMERATOR) / _horner(square, _ERF_DENOMINATOR)


def gelu_f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """The exact (erf) GELU, as PyTorch's nn.GELU() and ONNX's Gelu compute it."""
    return T.float32(0.5) * x * (T.float32(1.0) + erf_f32(x * T.float32(1.0 / math.sqrt(2.0))))


def activation(name: str | None) -> Callable[[tirx.PrimExpr], tirx.PrimExpr]:
    if name is None:
        return lambda value: value
    if name == "relu":
        return lambda value: T.max(value, T.float32(0))
    if name == "gelu":
        return gelu_f32
    raise ValueError(f"unsupported fused activation {name!r}; supported: {', '.join(ACTIVATIONS)}")
