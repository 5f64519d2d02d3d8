"""Rewrite QDQ layers into integer kernels.

Pattern (what QuantizeLinear/DequantizeLinear around MatMul/Gemm/Conv import as):
    matmul|conv2d(dequantize(q, sx, zx), W')  [+ bias] [relu] [quantize(., so, zo)
                                               [dequantize(., so, zo) + bias2, quantize(., s2, z2)]]
where q is a uint8/int8 activation tensor with per-tensor scale and zero point, and W' is
dequantize(W, sw, 0) of a constant int8 weight (per-tensor or per-output-channel scales,
symmetric), possibly behind permute_dims (Gemm transB=1). A convolution (NCHW, ungrouped) runs
as the matmul of its im2col rows and W as [O, C*KH*KW]. The bias is a float constant or
dequantize(int32 constant); bias2 (a matmul's bias add after its output Q/DQ, as QDQ exports
write MatMul + Add) runs in the epilogue after the requantize. The chain becomes one
u8 x s8 -> int32 kernel with the dequantize (and bias, activation) epilogue; the float weight
never exists. int8 activations are shifted into uint8 (+128, with the zero point) because
vpdpbusd multiplies unsigned by signed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from sparsec.schedules.u8_regroup import regrouped_shape, u8_regroup_kernel
from sparsec.schedules.u8s8_bsr_matmul import Int8BSRShape, pack_int8_bsr, supports_int8_bsr, u8s8_bsr_kernel
from sparsec.schedules.u8s8_matmul import GROUP, Int8MatmulShape, PostBias, Requantize, output_dtype, pack_weight, u8s8_matmul_kernel

from .block_sparsity import Int8LayerPlan, plan_int8_layer
from .dataflow import BindingRewriter, Dataflow, bound_value, constant_array, is_op, other_operand, per_tensor_quantization, rewrite_functions
from .im2col import ConvGeometry, conv_geometry, from_rows, im2col


@dataclass
class Int8LayerDecision:
    """One quantized layer, in graph order, for the compile summary."""

    k: int
    n: int
    m: int
    path: str  # "vnni" | "generic" | "vnni-bsr"
    plan: Int8LayerPlan | None = None  # the sparse-or-dense analysis (VNNI targets)
    op: str = "matmul"  # or "conv KHxKW" (run on its im2col rows)


@dataclass
class _QuantizedChain:
    activations: relax.Expr  # q: uint8 or int8
    zero_point: int  # of q, in its own dtype
    scale: float  # of q
    weight_nk: np.ndarray  # int8
    weight_scale: np.ndarray  # [N] float32
    bias: np.ndarray | None
    activation: str | None
    requantize: Requantize | None
    out_shape: tuple[int, ...]
    conv: ConvGeometry | None  # None: a matmul
    post_bias: PostBias | None = None
    post_bias_values: np.ndarray | None = None  # [N]


@tvm.transform.module_pass(opt_level=0, name="sparsec.QDQToInt8")
class QDQToInt8:
    def __init__(self, vnni: bool, sparsity_threshold: float | None = None):
        self.vnni = vnni
        self.sparsity_threshold = sparsity_threshold  # None: go sparse when the cost model says it pays
        self.decisions: list[Int8LayerDecision] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod, self.vnni, self.sparsity_threshold, self.decisions), mod)


def _find_chains(graph: Dataflow) -> dict[relax.Var, _QuantizedChain]:
    chains = {}
    for var, value in graph.bindings.items():
        is_conv = is_op(value, "relax.nn.conv2d")
        if not (is_op(value, "relax.matmul") or is_conv):
            continue
        activations = quantized_activations(value.args[0], graph.bindings)
        weight = _quantized_weight(value.args[1], graph.bindings)
        if activations is None or weight is None:
            continue
        weight_nk, weight_scale = weight
        conv = conv_geometry(value, weight_nk.shape) if is_conv else None
        if is_conv != (conv is not None):
            continue  # grouped or non-NCHW convolutions stay float
        weight_nk = weight_nk.reshape(weight_nk.shape[0], -1)
        end, bias, activation = var, None, None
        add = graph.only_user_call(end, "relax.add")
        if add is not None and (bias := _bias(other_operand(graph.bindings[add], end), weight_nk.shape[0], graph.bindings)) is not None:
            end = add
        if (relu := graph.only_user_call(end, "relax.nn.relu")) is not None:
            end, activation = relu, "relu"
        requantize = None
        if (quantize := graph.only_user_call(end, "relax.quantize")) is not None:
            requantize = output_quantization(graph.bindings[quantize], graph.bindings)
            end = quantize if requantize is not None else end
        post_bias, post_bias_values = None, None
        if requantize is not None and conv is None and (found := _post_bias(graph, end, requantize, weight_nk.shape[0])) is not None:
            end, post_bias, post_bias_values = found
        out_shape = tuple(int(d) for d in end.ty.shape.values)
        chains[end] = _QuantizedChain(
            *activations, weight_nk, weight_scale, bias, activation, requantize, out_shape, conv, post_bias, post_bias_values
        )
    return chains


def _post_bias(graph: Dataflow, quantized: relax.Var, requantize: Requantize, n: int):
    """(the end, PostBias, bias values) when the layer's requantized output only feeds
    dequantize (same parameters) -> add(per-channel constant) -> quantize (per tensor); None
    otherwise. Matmuls only: the bias runs along the output's last axis."""
    dequantize = graph.only_user_call(quantized, "relax.dequantize")
    if dequantize is None or per_tensor_quantization(graph.bindings[dequantize], graph.bindings) != (requantize.scale, requantize.zero_point):
        return None
    add = graph.only_user_call(dequantize, "relax.add")
    if add is None or int(quantized.ty.shape.values[-1]) != n:
        return None
    values = _bias(other_operand(graph.bindings[add], dequantize), n, graph.bindings)
    quantize = graph.only_user_call(add, "relax.quantize")
    if values is None or quantize is None or (output := output_quantization(graph.bindings[quantize], graph.bindings)) is None:
        return None
    return quantize, PostBias(output), values


def _dequantize_args(expr: relax.Expr, bindings):
    """(data, scale array, zero-point array, axis) when expr is (bound to) a dequantize with
    constant scale and zero point."""
    value = bound_value(expr, bindings)
    if not is_op(value, "relax.dequantize"):
        return None
    scale, zero_point = constant_array(value.args[1], bindings), constant_array(value.args[2], bindings)
    if scale is None or zero_point is None:
        return None
    return value.args[0], scale, zero_point, int(value.attrs.axis)


def quantized_activations(expr: relax.Expr, bindings) -> tuple[relax.Expr, int, float] | None:
    found = _dequantize_args(expr, bindings)
    if found is None:
        return None
    data, scale, zero_point, _ = found
    if data.ty.dtype not in ("uint8", "int8") or scale.size != 1 or zero_point.size != 1:
        return None  # per-channel activations: not a per-tensor quantized input
    return data, int(zero_point.reshape(())), float(scale.reshape(()))


def _quantized_weight(expr: relax.Expr, bindings) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 W as [N, K], per-output-channel scales [N]) for a symmetric constant weight: a
    matmul's [K, N] (or [N, K] behind a transpose), or a convolution's [N, C, KH, KW]."""
    value = bound_value(expr, bindings)
    transposed = is_op(value, "relax.permute_dims")  # Gemm transB=1: stored [N, K]
    if transposed:
        axes = value.attrs.axes
        if axes is not None and [int(a) for a in axes] != [1, 0]:
            return None
        value = value.args[0]
    found = _dequantize_args(value, bindings)
    if found is None:
        return None
    data, scale, zero_point, axis = found
    stored = constant_array(data, bindings)
    if stored is None or stored.dtype != np.int8 or stored.ndim not in (2, 4) or np.any(zero_point != 0):
        return None
    output_first = transposed or stored.ndim == 4
    weight_nk = stored if output_first else stored.T
    output_axis = 0 if output_first else 1
    n = weight_nk.shape[0]
    if scale.size == 1:
        scales = np.full(n, float(scale.reshape(())), np.float32)
    elif scale.size == n and axis % stored.ndim == output_axis:
        scales = scale.reshape(n).astype(np.float32)
    else:
        return None  # scales along the reduction axis cannot move past the sum
    return np.ascontiguousarray(weight_nk), scales


def output_quantization(quantize: relax.Call, bindings) -> Requantize | None:
    """The layer's own output QuantizeLinear, per tensor: it moves into the kernel's epilogue."""
    params, dtype = per_tensor_quantization(quantize, bindings), str(quantize.attrs.out_dtype)
    if params is None or dtype not in ("uint8", "int8"):
        return None
    return Requantize(*params, dtype)


def _bias(expr: relax.Expr | None, n: int, bindings) -> np.ndarray | None:
    """n per-channel constants, float or dequantized int32, possibly reshaped (a convolution's
    [1, n, 1, 1])."""
    if expr is None:
        return None
    value = bound_value(expr, bindings)
    if is_op(value, "relax.reshape") and value.args[0] is not expr:
        expr = value.args[0]
    found = _dequantize_args(expr, bindings)
    if found is not None:
        data, scale, zero_point, _ = found
        stored = constant_array(data, bindings)
        array = None if stored is None else (stored.astype(np.float64) - zero_point) * scale
    else:
        array = constant_array(expr, bindings)
    if array is None or array.size != n or n not in array.shape:
        return None
    return array.reshape(n).astype(np.float32)


@mutator
class _Rewriter(BindingRewriter):
    def __init__(self, mod, vnni: bool, sparsity_threshold: float | None, decisions: list[Int8LayerDecision]):
        super().__init__(mod)
        self.vnni = vnni
        self.sparsity_threshold = sparsity_threshold
        self.decisions = decisions
        self.chains: dict[relax.Var, _QuantizedChain] = {}
        # Layers that read the same activations (attention's Q, K and V) share their uint8 rows,
        # keyed by (activations, im2col geometry), and the rows' regrouped copy.
        self._rows: dict[tuple, tuple[relax.Var, int]] = {}
        self._regrouped_rows: dict[relax.Var, relax.Var] = {}

    def visit_dataflow_block_(self, block):
        self._rows, self._regrouped_rows = {}, {}  # a block's dataflow vars do not outlive it
        return super().visit_dataflow_block_(block)

    def prepare(self, graph: Dataflow) -> None:
        self.chains = _find_chains(graph)

    def rewrite(self, binding) -> relax.Expr | None:
        chain = self.chains.get(binding.var)
        if chain is None:
            return None
        out = self._int8_layer(chain)
        n = chain.weight_nk.shape[0]
        return relax.op.reshape(out, chain.out_shape) if chain.conv is None else from_rows(self.builder_, out, chain.conv, n)

    def _unsigned_activations(self, chain: _QuantizedChain) -> tuple[relax.Expr, int]:
        """The activations as uint8, and their zero point: s8 -> u8 is x + 128, zero point + 128."""
        x = self.visit_expr(chain.activations)
        if chain.activations.ty.dtype != "int8":
            return x, chain.zero_point
        shifted = relax.op.add(relax.op.astype(x, "int32"), relax.const(128, "int32"))
        return self.builder_.emit(relax.op.astype(shifted, "uint8")), chain.zero_point + 128

    def _activation_rows(self, chain: _QuantizedChain, k: int) -> tuple[relax.Var, int]:
        """The activations as uint8 [M, K] rows (a convolution's im2col rows), and their zero point."""
        key = (chain.activations, chain.conv)
        if key not in self._rows:
            x, zero_point = self._unsigned_activations(chain)
            if chain.conv is not None:
                rows = im2col(self.builder_, x, chain.conv, zero_point)
            else:
                m = int(np.prod(chain.activations.ty.shape.values)) // k
                rows = self.builder_.emit(relax.op.reshape(x, (m, k)))
            self._rows[key] = rows, zero_point
        return self._rows[key]

    def _regrouped(self, rows: relax.Var) -> relax.Var:
        """[M, K] -> [M/T, K/4, T, 4], what the BSR kernels read (schedules/u8_regroup.py)."""
        if rows not in self._regrouped_rows:
            m, k = (int(d) for d in rows.ty.shape.values)
            kernel = self.builder_.add_func(u8_regroup_kernel(m, k), "u8_regroup")
            out_type = relax.TensorType(regrouped_shape(m, k), "uint8")
            self._regrouped_rows[rows] = self.builder_.emit(relax.call_tir(kernel, relax.Tuple([rows]), out_type))
        return self._regrouped_rows[rows]

    def _int8_layer(self, chain: _QuantizedChain) -> relax.Var:
        """The layer as an [M, N] product; a convolution's M counts its padded im2col rows."""
        weight_nk = chain.weight_nk
        if chain.conv is not None:
            weight_nk = np.pad(weight_nk, ((0, 0), (0, chain.conv.padded_columns - chain.conv.columns)))
        x, zero_point = self._activation_rows(chain, weight_nk.shape[1])
        m = int(x.ty.shape.values[0])
        chain = replace(chain, weight_nk=weight_nk)
        n, k = weight_nk.shape
        vnni = self.vnni and k % GROUP == 0
        plan = plan_int8_layer(weight_nk, m, self.sparsity_threshold) if vnni else None
        sparse = plan is not None and plan.sparse and supports_int8_bsr(m, k, n, plan.block_rows)
        op = "matmul" if chain.conv is None else "conv {}x{}".format(*chain.conv.kernel)
        self.decisions.append(Int8LayerDecision(k, n, m, "vnni-bsr" if sparse else "vnni" if vnni else "generic", plan, op))
        compensation = (zero_point * chain.weight_nk.astype(np.int32).sum(axis=1)).astype(np.int32)
        scale = (chain.scale * chain.weight_scale).astype(np.float32)
        bias = (chain.bias if chain.bias is not None else np.zeros(n, np.float32)).astype(np.float32)
        out_type = relax.TensorType((m, n), output_dtype(chain.requantize, chain.post_bias))
        suffix = ("_requantize" if chain.requantize is not None else "") + ("_bias" if chain.post_bias is not None else "")
        if sparse:
            return self._sparse_int8_layer(chain, plan.block_rows, x, (compensation, scale, bias), out_type, suffix)
        return self._dense_int8_layer(chain, vnni, x, (compensation, scale, bias), out_type, suffix)

    def _sparse_int8_layer(self, chain, block_rows: int, x, epilogue_arrays, out_type, suffix) -> relax.Var:
        n, k = chain.weight_nk.shape
        m = out_type.shape.values[0]
        data, indices, indptr = pack_int8_bsr(chain.weight_nk, block_rows)
        shape = Int8BSRShape(int(m), k, n, block_rows, data.shape[0])
        func = u8s8_bsr_kernel(shape, chain.activation, chain.requantize, post_bias=chain.post_bias)
        kernel = self.builder_.add_func(func, f"u8s8_bsr_{block_rows}x4{suffix}")
        compensation, scale, bias = epilogue_arrays
        bias = bias if chain.post_bias is None else np.concatenate([bias, chain.post_bias_values])
        args = [self._regrouped(x), *(relax.const(a) for a in (data, indices, indptr, compensation, scale, bias))]
        return self.builder_.emit(relax.call_tir(kernel, relax.Tuple(args), out_type))

    def _dense_int8_layer(self, chain, vnni: bool, x, epilogue_arrays, out_type, suffix) -> relax.Var:
        n, k = chain.weight_nk.shape
        shape = Int8MatmulShape(int(out_type.shape.values[0]), k, n)
        padding = shape.padded_n - n
        compensation, scale, bias = (np.pad(a, (0, padding)).astype(a.dtype) for a in epilogue_arrays)
        if chain.post_bias is not None:
            bias = np.concatenate([bias, np.pad(chain.post_bias_values, (0, padding)).astype(np.float32)])
        func = u8s8_matmul_kernel(shape, vnni, chain.activation, chain.requantize, post_bias=chain.post_bias)
        kernel = self.builder_.add_func(func, f"u8s8_matmul_{'vnni' if vnni else 'generic'}{suffix}")
        args = [x, *(relax.const(a) for a in (pack_weight(chain.weight_nk, vnni), compensation, scale, bias))]
        return self.builder_.emit(relax.call_tir(kernel, relax.Tuple(args), out_type))

