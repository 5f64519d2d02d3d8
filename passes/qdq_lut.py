"""Replace element-wise chains between quantized tensors by a 256-entry lookup table.

Pattern: quantize(f(dequantize(q, s, z)), so, zo) where q is one uint8/int8 tensor, every scale
and zero point is per tensor, and f is built from element-wise ops whose other operands are
scalar constants, with any number of quantize/dequantize pairs inside (onnxruntime.quantization
wraps every op of an exported GELU, x * 0.5 * (1 + erf(x / sqrt 2)), in its own pair). The
output is then a function of q's byte alone: the chain becomes take(table, q), the table
evaluated at compile time with the ops' float32 semantics and the exact erf, intermediate
roundings included (schedules/u8_lookup.py). A kernel that did the float math per element
(seven divisions and six roundings per GELU element) becomes one table lookup per byte.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.special
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import mutator

from sparsec.schedules.u8_lookup import u8_lookup_kernel

from .dataflow import BindingRewriter, bound_value, constant_array, is_op, per_tensor_quantization, rewrite_functions

Lifted = Callable[[np.ndarray], np.ndarray]  # the chain so far, as a function of q's 256 values (float32)

_UNARY = {
    "relax.erf": scipy.special.erf,
    "relax.tanh": np.tanh,
    "relax.sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relax.exp": np.exp,
    "relax.sqrt": np.sqrt,
    "relax.negative": np.negative,
    "relax.nn.relu": lambda x: np.maximum(x, 0),
    "relax.nn.gelu": lambda x: 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2))),
    "relax.nn.gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
}
_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply, "relax.divide": np.divide}
_LIMITS = {"uint8": (0, 255), "int8": (-128, 127)}


@tvm.transform.module_pass(opt_level=0, name="sparsec.QDQElementwiseToLUT")
class QDQElementwiseToLUT:
    """`vbmi`: the target has AVX-512 VBMI (64 lookups per vpermi2b pair) for the lookups."""

    def __init__(self, vbmi: bool = False):
        self.vbmi = vbmi

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod, self.vbmi), mod)


def _scalar(expr: relax.Expr, bindings) -> float | None:
    array = constant_array(expr, bindings)
    return float(array.reshape(())) if array is not None and array.size == 1 else None


def _constant(expr: relax.Expr, bindings) -> np.ndarray | None:
    """A constant operand as float32, seen through a dequantize (QDQ exports quantize the 1 and
    0.5 of a GELU too)."""
    value = bound_value(expr, bindings)
    if is_op(value, "relax.dequantize"):
        stored, params = constant_array(value.args[0], bindings), per_tensor_quantization(value, bindings)
        if stored is None or params is None:
            return None
        return ((stored.astype(np.float32) - np.float32(params[1])) * np.float32(params[0])).astype(np.float32)
    array = constant_array(expr, bindings)
    return None if array is None else array.astype(np.float32)


def quantize_f32(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    low, high = _LIMITS[dtype]
    return np.clip(np.rint(x.astype(np.float32) / np.float32(scale)) + zero_point, low, high)


class _Chain:
    """Lifts an expression into a function of one quantized source tensor, or gives up."""

    def __init__(self, bindings):
        self.bindings = bindings
        self.source: relax.Var | None = None
        self.ops = 0  # element-wise ops other than quantize/dequantize

    def lift(self, expr: relax.Expr) -> Lifted | None:
        value = bound_value(expr, self.bindings)
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            return None
        name = value.op.name
        if name == "relax.dequantize":
            return self.lift_dequantize(value)
        if name == "relax.quantize":
            return self.lift_quantize(value)
        if name in _UNARY:
            inner, op = self.lift(value.args[0]), _UNARY[name]
            self.ops += 1
            return None if inner is None else lambda q: op(inner(q)).astype(np.float32)
        if name in _BINARY:
            return self.lift_binary(_BINARY[name], value)
        if name == "relax.clip":
            inner, low, high = self.lift(value.args[0]), _scalar(value.args[1], self.bindings), _scalar(value.args[2], self.bindings)
            self.ops += 1
            return None if inner is None or low is None or high is None else lambda q: np.clip(inner(q), low, high).astype(np.float32)
        return None

    def lift_dequantize(self, call: relax.Call) -> Lifted | None:
        params = per_tensor_quantization(call, self.bindings)
        data = call.args[0]
        if params is None or not isinstance(data, relax.Var) or str(data.ty.dtype) not in _LIMITS:
            return None
        scale, zero_point = params
        inner = self.lift(data) if is_op(self.bindings.get(data), "relax.quantize") else None
        if inner is None:  # q is the chain's source
            if self.source is not None and not self.source.same_as(data):
                return None  # a second quantized input: not a function of one byte
            self.source = data
            inner = lambda q: q.astype(np.float32)  # noqa: E731
        return lambda q: ((inner(q) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)

    def lift_quantize(self, call: relax.Call) -> Lifted | None:
        params = per_tensor_quantization(call, self.bindings)
        dtype = str(call.attrs.out_dtype)
        if params is None or dtype not in _LIMITS:
            return None
        saved = (self.source, self.ops)
        inner = self.lift(call.args[0])
        if inner is None:
            self.source, self.ops = saved
            return None
        return lambda q: quantize_f32(inner(q), *params, dtype).astype(np.float32)

    def lift_binary(self, op, call: relax.Call) -> Lifted | None:
        lhs, rhs = call.args
        self.ops += 1
        lifted = []
        for operand in (lhs, rhs):
            constant = _constant(operand, self.bindings)
            if constant is None:
                lifted.append(self.lift(operand))
            elif constant.size == 1:
                lifted.append(lambda q, c=np.float32(constant.reshape(())): np.full(q.shape, c, np.float32))
            else:
                return None  # a per-channel constant: the output is not a function of one byte
        if any(f is None for f in lifted):
            return None
        f, g = lifted
        return lambda q: op(f(q), g(q)).astype(np.float32)


@mutator
class _Rewriter(BindingRewriter):
    def __init__(self, mod, vbmi: bool):
        super().__init__(mod)
        self.vbmi = vbmi

    def rewrite(self, binding) -> relax.Expr | None:
        table = self._table(binding.value)
        if table is None:
            return None
        source, values = table
        shape = [int(d) for d in source.ty.shape.values]
        size, in_dtype, out_dtype = int(np.prod(shape)), str(source.ty.dtype), str(values.dtype)
        kernel = self.builder_.add_func(u8_lookup_kernel(size, in_dtype, out_dtype, self.vbmi), "u8_lookup")
        flat = self.builder_.emit(relax.op.reshape(self.visit_expr(source), (size,)))
        looked_up = self.builder_.emit(
            relax.call_tir(kernel, relax.Tuple([flat, relax.const(values.astype(np.int32))]), relax.TensorType((size,), out_dtype))
        )
        return relax.op.reshape(looked_up, shape)

    def _table(self, value: relax.Expr) -> tuple[relax.Var, np.ndarray] | None:
        """(source q, the 256 output bytes indexed by q's byte, offset by 128 for int8) for a
        quantize that ends a chain with at least one element-wise op and static shapes; None
        otherwise."""
        if not is_op(value, "relax.quantize"):
            return None
        chain = _Chain(self.bindings)
        lifted = chain.lift_quantize(value)
        if lifted is None or chain.ops == 0 or chain.source is None:
            return None
        if not tvm_ffi.structural_equal(chain.source.ty.shape, value.ty.shape):
            return None  # a broadcast against a non-scalar: not element-wise on q
        if not all(isinstance(d, tvm.tirx.IntImm) for d in value.ty.shape.values):
            return None
        low, _ = _LIMITS[str(chain.source.ty.dtype)]
        with np.errstate(all="ignore"):
            outputs = lifted(np.arange(low, low + 256, dtype=np.float32))
        return chain.source, outputs.astype(str(value.attrs.out_dtype))

