"""Rewrite matmul/dense layers with constant, sparse-enough weights into BSR kernels.

Pattern: `matmul(x, W)` where W is a constant (or `permute_dims` of one, as Gemm(transB=1)
imports), optionally followed by `add(., bias)` with a constant [N] bias, then `relu` or GELU
(nn.gelu or its exported erf formula), then `add(., residual)` with a tensor of the output's
shape, each intermediate used once. The whole chain becomes one call to a BSR kernel that
applies the epilogue on its register tile; the dense weight is dropped, only the BSR arrays are
kept. A `columns` layer whose only consumers are `columns` layers writes its output transposed,
as the [K, M] input they read (FFN up -> GELU -> FFN down): no transpose between them.
Runs on the imported Relax module, before legalization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant  # relax.const(...) builds a GenericConst, a Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparsec.schedules.f32_csr_matvec import CSRShape, csr_matvec_kernel, pack_padded_csr
from sparsec.schedules.f32_bsr_matmul import BSREpilogue, BSRShape, bsr_columns_kernel, bsr_rows_kernel

from .block_sparsity import LayerPlan, pack_bsr, plan_layer
from .dataflow import Dataflow, bound_value, constant_array, is_op, other_operand


@dataclass(frozen=True)
class BSROptions:
    sparsity_threshold: float | None = None  # None: go sparse when the cost model says it pays
    block: tuple[int, int] | None = None  # None: pick per layer from the weight's zero pattern


@dataclass
class LayerDecision:
    """One weighted layer's outcome, in graph order, for the compile summary."""

    k: int
    n: int
    m: int
    plan: LayerPlan


@dataclass
class _Chain:
    matmul: relax.Var  # the matmul's (or convolution's) binding: where the chain starts
    conv: bool  # a 1x1 NCHW convolution: x and the output are channels-major ([K, M], [N, M])
    x: relax.Expr
    weight_nk: np.ndarray
    bias: np.ndarray | None
    activation: str | None
    residual: relax.Expr | None
    out_shape: tuple[int, ...]


@dataclass
class _Layer:
    chain: _Chain
    plan: LayerPlan
    m: int
    # the kernel writes [N, M]: a convolution's channels-major output, or a linear layer's whose
    # every consumer is a `columns` layer reading it as x^T
    transposed_output: bool = False


@tvm.transform.module_pass(opt_level=0, name="sparsec.DenseToBSR")
class DenseToBSR:
    def __init__(self, options: BSROptions | None = None):
        self.options = options or BSROptions()
        self.decisions: list[LayerDecision] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.layers = self._plan_layers(Dataflow(func))
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())

    def _plan_layers(self, graph: Dataflow) -> dict[relax.Var, _Layer]:
        """Chain end variable -> its layer, planned, in graph order. A `columns` layer whose
        consumers are all sparse-candidate layers can hand them x^T instead of x."""
        chains = _find_chains(graph)
        chain_starts = {chain.matmul for chain in chains.values()}

        def feeds_only_layers(end: relax.Var) -> bool:
            consumers = graph.users.get(end, [])
            return bool(consumers) and all(user in chain_starts and graph.bindings[user].args[0].same_as(end) for user in consumers)

        layers: dict[relax.Var, _Layer] = {}
        for end, chain in chains.items():
            n, k = chain.weight_nk.shape
            m = int(np.prod(chain.out_shape)) // n  # rows of x: tokens, or pixels of a 1x1 convolution
            producer = layers.get(chain.x)
            hands_over = producer is not None and not producer.chain.conv and producer.plan.loop_order == "columns" and feeds_only_layers(chain.x)
            free_transpose = chain.conv or hands_over
            plan = plan_layer(chain.weight_nk, m, self.options.sparsity_threshold, self.options.block, free_transpose, columns_only=chain.conv)
            self.decisions.append(LayerDecision(k, n, m, plan))
            layers[end] = _Layer(chain, plan, m)
        by_start = {layer.chain.matmul: layer for layer in layers.values()}

        def reads_transposed(user: relax.Var) -> bool:  # a linear `columns` layer takes x^T
            consumer = by_start.get(user)
            return consumer is not None and consumer.plan.loop_order == "columns" and not consumer.chain.conv

        for end, layer in layers.items():
            hands_over = layer.chain.residual is None and feeds_only_layers(end) and all(reads_transposed(u) for u in graph.users[end])
            layer.transposed_output = layer.plan.loop_order == "columns" and (layer.chain.conv or hands_over)
        return layers


def _find_chains(graph: Dataflow) -> dict[relax.Var, _Chain]:
    """End variable of each matmul(+bias)(+relu|gelu)(+residual) chain with a constant weight
    -> the chain. Every intermediate must have no other user."""
    chains = {}
    for var, value in graph.bindings.items():
        conv = is_op(value, "relax.nn.conv2d")
        weight = _pointwise_conv_weight(value, graph.bindings) if conv else _constant_weight(value, graph.bindings)
        if weight is None:
            continue
        end, bias, activation, residual = var, None, None, None
        add = graph.only_user_call(end, "relax.add")
        if add is not None:
            bias = _bias_operand(graph.bindings[add], end, weight.shape[0], -3 if conv else -1, graph.bindings)
            if bias is not None:
                end = add
        if (relu := graph.only_user_call(end, "relax.nn.relu")) is not None:
            end, activation = relu, "relu"
        elif (gelu := _gelu_end(graph, end)) is not None:
            end, activation = gelu, "gelu"
        add = graph.only_user_call(end, "relax.add")
        if add is not None:
            residual = _residual_operand(graph.bindings[add], end)
            if residual is not None:
                end = add
        chains[end] = _Chain(var, conv, value.args[0], weight, bias, activation, residual, tuple(int(d) for d in end.ty.shape.values))
    return chains


def _gelu_end(graph: Dataflow, x: relax.Var) -> relax.Var | None:
    """The last binding of gelu(x): relax's nn.gelu, or the erf formula PyTorch exports,
    x * (erf(x / sqrt(2)) + 1) * 0.5."""
    if (gelu := graph.only_user_call(x, "relax.nn.gelu")) is not None:
        return gelu
    users = graph.users.get(x, [])
    divide = next((u for u in users if u is not None and is_op(graph.bindings[u], "relax.divide")), None)
    if len(users) != 2 or divide is None or not _is_scalar(graph.bindings[divide].args[1], math.sqrt(2.0)):
        return None
    erf = graph.only_user_call(divide, "relax.erf")
    plus_one = graph.only_user_call(erf, "relax.add") if erf is not None else None
    if plus_one is None or not _other_is_scalar(graph.bindings[plus_one], erf, 1.0):
        return None
    times_x = graph.only_user_call(plus_one, "relax.multiply")
    if times_x is None or times_x not in users or not other_operand(graph.bindings[times_x], plus_one).same_as(x):
        return None
    half = graph.only_user_call(times_x, "relax.multiply")
    return half if half is not None and _other_is_scalar(graph.bindings[half], times_x, 0.5) else None


def _is_scalar(expr: relax.Expr | None, value: float) -> bool:
    if not isinstance(expr, Constant):
        return False
    array = expr.value.numpy()
    return array.size == 1 and abs(float(array.reshape(())) - value) <= 1e-6 * abs(value)


def _other_is_scalar(call: relax.Call, operand: relax.Expr, value: float) -> bool:
    return _is_scalar(other_operand(call, operand), value)


def _constant_weight(value: relax.Expr, bindings) -> np.ndarray | None:
    """W^T as [N, K] for matmul(x, W) with a constant 2-D W (possibly behind permute_dims)."""
    if not is_op(value, "relax.matmul") or value.attrs.out_dtype not in ("", "void", None, "float32"):
        return None
    weight = bound_value(value.args[1], bindings)
    if isinstance(weight, Constant):
        array = weight.value.numpy()
        return np.ascontiguousarray(array.T) if array.ndim == 2 and array.dtype == np.float32 else None
    if is_op(weight, "relax.permute_dims") and isinstance(weight.args[0], Constant):
        axes = weight.attrs.axes
        array = weight.args[0].value.numpy()
        if array.ndim == 2 and array.dtype == np.float32 and (axes is None or [int(a) for a in axes] == [1, 0]):
            return array  # matmul(x, W.T): W is already [N, K]
    return None


def _pointwise_conv_weight(value: relax.Call, bindings) -> np.ndarray | None:
    """W as [N, K] for a 1x1, stride-1, unpadded, ungrouped NCHW conv2d with a constant weight."""
    attrs = value.attrs
    weight = constant_array(value.args[1], bindings)
    plain = (
        [int(v) for v in attrs.strides] == [1, 1]
        and not any(int(v) for v in attrs.padding)
        and [int(v) for v in attrs.dilation] == [1, 1]
        and int(attrs.groups) == 1
        and (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW")
        and attrs.out_dtype in ("", "void", None, "float32")
    )
    if not plain or weight is None or weight.dtype != np.float32 or weight.shape[2:] != (1, 1):
        return None
    return np.ascontiguousarray(weight.reshape(weight.shape[:2]))


def _bias_operand(add: relax.Call, layer_out: relax.Var, n: int, channel_axis: int, bindings) -> np.ndarray | None:
    """A constant with the layer's n channels along `channel_axis` (and size 1 elsewhere)."""
    other = other_operand(add, layer_out)
    array = constant_array(other, bindings) if other is not None else None
    if array is not None and array.dtype == np.float32 and array.size == n and array.ndim >= -channel_axis and array.shape[channel_axis] == n:
        return array.reshape(n)
    return None


def _residual_operand(add: relax.Call, layer_out: relax.Var) -> relax.Expr | None:
    """The other input of `layer_out + residual` when it is a tensor of the layer's own shape."""
    other = other_operand(add, layer_out)
    if other is None or isinstance(other, Constant) or not isinstance(other.ty, relax.TensorType):
        return None
    same_shape = other.ty.shape is not None and [int(d) for d in other.ty.shape.values] == [int(d) for d in layer_out.ty.shape.values]
    return other if same_shape and other.ty.dtype == "float32" else None


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.layers: dict[relax.Var, _Layer] = {}
        self._transposed: dict[relax.Expr, relax.Var] = {}  # original x -> x^T as [K, M]

    def visit_var_binding_(self, binding) -> None:
        layer = self.layers.get(binding.var)
        if layer is None or not layer.plan.sparse:
            super().visit_var_binding_(binding)
            return
        out = self._sparse_layer(layer)
        if layer.transposed_output and not layer.chain.conv:  # only `columns` layers read it, as x^T
            self._transposed[binding.var] = out
            return
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        if layer.chain.conv:
            self.set_var_remap(binding.var, emit(_from_channels_major(self.builder_, out, layer.chain.out_shape)))
        else:
            self.set_var_remap(binding.var, emit(relax.op.reshape(out, layer.chain.out_shape)))

    def _sparse_layer(self, layer: _Layer) -> relax.Var:
        chain, plan, m = layer.chain, layer.plan, layer.m
        n, k = chain.weight_nk.shape
        epilogue = BSREpilogue(chain.activation, chain.residual is not None, layer.transposed_output)
        if plan.loop_order == "gather":
            data, indices, indptr = pack_padded_csr(chain.weight_nk)
            func = csr_matvec_kernel(CSRShape(m, k, n, data.size), chain.activation, chain.residual is not None)
        else:
            data, indices, indptr = pack_bsr(chain.weight_nk, plan.block, plan.loop_order)
            if indices.size == 0:  # all-zero weight: keep the buffers non-empty; indptr makes every row empty
                indices = np.zeros(1, np.int32)
            shape = BSRShape(m, k, n, plan.block[0], plan.block[1], data.shape[0])
            func = (bsr_rows_kernel if plan.loop_order == "rows" else bsr_columns_kernel)(shape, epilogue)
        kernel = self.builder_.add_func(func, f"bsr_{plan.loop_order}_{plan.block[0]}x{plan.block[1]}{epilogue.suffix()}")
        if chain.conv:
            x = _to_channels_major(self.builder_, self.visit_expr(chain.x))
        elif plan.loop_order == "columns":
            x = self._transposed_input(chain.x, m, k)
        else:
            x = self.builder_.emit(relax.op.reshape(self.visit_expr(chain.x), (m, k)))
        bias = chain.bias if chain.bias is not None else np.zeros(n, np.float32)
        args = [x, *(relax.const(a) for a in (data, indices, indptr, bias.astype(np.float32)))]
        if chain.residual is not None:
            residual = self.visit_expr(chain.residual)
            args.append(_to_channels_major(self.builder_, residual) if chain.conv else self.builder_.emit(relax.op.reshape(residual, (m, n))))
        out_shape = (n, m) if layer.transposed_output else (m, n)
        return self.builder_.emit(relax.call_tir(kernel, relax.Tuple(args), relax.TensorType(out_shape, "float32")))

    def _transposed_input(self, x: relax.Expr, m: int, k: int) -> relax.Var:
        """x as [K, M], emitted once per input (Q, K and V projections share it)."""
        if x not in self._transposed:
            rows = self.builder_.emit(relax.op.reshape(self.visit_expr(x), (m, k)))
            self._transposed[x] = self.builder_.emit(relax.op.permute_dims(rows, [1, 0]))
        return self._transposed[x]


def _to_channels_major(builder: relax.BlockBuilder, nchw: relax.Expr) -> relax.Var:
    """[B, C, H, W] -> [C, B*H*W]: a view for batch 1, a transpose otherwise."""
    b, c, h, w = (int(d) for d in nchw.ty.shape.values)
    if b == 1:
        return builder.emit(relax.op.reshape(nchw, (c, h * w)))
    per_image = builder.emit(relax.op.permute_dims(builder.emit(relax.op.reshape(nchw, (b, c, h * w))), [1, 0, 2]))
    return builder.emit(relax.op.reshape(per_image, (c, b * h * w)))


def _from_channels_major(builder: relax.BlockBuilder, channels_major: relax.Expr, nchw_shape) -> relax.Expr:
    """[C, B*H*W] -> [B, C, H, W]."""
    b, c, h, w = nchw_shape
    if b == 1:
        return relax.op.reshape(channels_major, nchw_shape)
    per_image = builder.emit(relax.op.permute_dims(builder.emit(relax.op.reshape(channels_major, (c, b, h * w))), [1, 0, 2]))
    return relax.op.reshape(per_image, nchw_shape)
