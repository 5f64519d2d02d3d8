"""Rewrite matmul/dense layers with constant, sparse-enough weights into BSR kernels.

Pattern: `matmul(x, W)` where W is a constant (or `permute_dims` of one, as Gemm(transB=1)
imports), optionally followed by `add(., bias)` with a constant [N] bias and then `relu`, each
intermediate used once. The whole chain becomes one call to a BSR kernel that applies bias and
activation on its register tile; the dense weight is dropped, only the BSR arrays are kept.
Runs on the imported Relax module, before legalization.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant  # relax.const(...) builds a GenericConst, a Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparsec.schedules.f32_bsr_matmul import BSRShape, bsr_columns_kernel, bsr_rows_kernel

from .block_sparsity import LayerPlan, pack_bsr, plan_layer


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
    x: relax.Expr
    weight_nk: np.ndarray
    bias: np.ndarray | None
    activation: str | None
    out_shape: tuple[int, ...]


@tvm.transform.module_pass(opt_level=0, name="sparsec.DenseToBSR")
class DenseToBSR:
    def __init__(self, options: BSROptions | None = None):
        self.options = options or BSROptions()
        self.decisions: list[LayerDecision] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.options, self.decisions)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.chains = _find_chains(func)
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


def _find_chains(func: relax.Function) -> dict[relax.Var, _Chain]:
    """End variable of each matmul(+bias)(+relu) chain with a constant weight -> the chain."""
    bindings = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    users: dict[relax.Var, list[relax.Var]] = {}
    for var, value in bindings.items():
        for used in relax.analysis.free_vars(value):
            users.setdefault(used, []).append(var)
    for used in relax.analysis.free_vars(func.body.body):
        users.setdefault(used, []).append(None)

    def only_user(var):
        found = users.get(var, [])
        return found[0] if len(found) == 1 and found[0] is not None else None

    chains = {}
    for var, value in bindings.items():
        weight = _constant_weight(value, bindings)
        if weight is None:
            continue
        end, bias, activation = var, None, None
        user = only_user(end)
        if user is not None and _is_op(bindings[user], "relax.add"):
            bias = _bias_operand(bindings[user], end, weight.shape[0])
            if bias is not None:
                end, user = user, only_user(user)
        if user is not None and _is_op(bindings[user], "relax.nn.relu"):
            end, activation = user, "relu"
        chains[end] = _Chain(value.args[0], weight, bias, activation, tuple(int(d) for d in end.ty.shape.values))
    return chains


def _is_op(value: relax.Expr, name: str) -> bool:
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name


def _constant_weight(value: relax.Expr, bindings) -> np.ndarray | None:
    """W^T as [N, K] for matmul(x, W) with a constant 2-D W (possibly behind permute_dims)."""
    if not _is_op(value, "relax.matmul") or value.attrs.out_dtype not in ("", "void", None, "float32"):
        return None
    weight = value.args[1]
    if isinstance(weight, relax.Var) and weight in bindings:
        weight = bindings[weight]
    if isinstance(weight, Constant):
        array = weight.value.numpy()
        return np.ascontiguousarray(array.T) if array.ndim == 2 and array.dtype == np.float32 else None
    if _is_op(weight, "relax.permute_dims") and isinstance(weight.args[0], Constant):
        axes = weight.attrs.axes
        array = weight.args[0].value.numpy()
        if array.ndim == 2 and array.dtype == np.float32 and (axes is None or [int(a) for a in axes] == [1, 0]):
            return array  # matmul(x, W.T): W is already [N, K]
    return None


def _bias_operand(add: relax.Call, matmul_var: relax.Var, n: int) -> np.ndarray | None:
    lhs, rhs = add.args
    other = rhs if lhs.same_as(matmul_var) else lhs if rhs.same_as(matmul_var) else None
    if isinstance(other, Constant):
        array = other.value.numpy()
        if array.dtype == np.float32 and array.size == n and array.shape[-1] == n:
            return array.reshape(n)
    return None


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, options: BSROptions, decisions: list[LayerDecision]):
        super().__init__(mod)
        self.options = options
        self.decisions = decisions
        self.chains: dict[relax.Var, _Chain] = {}
        self._transposed: dict[relax.Expr, relax.Var] = {}

    def visit_var_binding_(self, binding) -> None:
        chain = self.chains.get(binding.var)
        replacement = self._sparse_layer(chain) if chain is not None else None
        if replacement is None:
            super().visit_var_binding_(binding)
            return
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(replacement))

    def _sparse_layer(self, chain: _Chain) -> relax.Expr | None:
        n, k = chain.weight_nk.shape
        m = int(np.prod(chain.out_shape[:-1]))
        plan = plan_layer(chain.weight_nk, m, self.options.sparsity_threshold, self.options.block)
        self.decisions.append(LayerDecision(k, n, m, plan))
        if not plan.sparse:
            return None
        data, indices, indptr = pack_bsr(chain.weight_nk, plan.block, plan.loop_order)
        if indices.size == 0:  # all-zero weight: keep the buffers non-empty; indptr makes every row empty
            indices = np.zeros(1, np.int32)
        shape = BSRShape(m, k, n, plan.block[0], plan.block[1], data.shape[0])
        make_kernel = bsr_rows_kernel if plan.loop_order == "rows" else bsr_columns_kernel
        kernel = self.builder_.add_func(make_kernel(shape, chain.activation), f"bsr_{plan.loop_order}_{plan.block[0]}x{plan.block[1]}")
        if plan.loop_order == "columns":
            x = self._transposed_input(chain.x, m, k)
        else:
            x = self.builder_.emit(relax.op.reshape(self.visit_expr(chain.x), (m, k)))
        bias = chain.bias if chain.bias is not None else np.zeros(n, np.float32)
        args = [x, *(relax.const(a) for a in (data, indices, indptr, bias.astype(np.float32)))]
        out = self.builder_.emit(relax.call_tir(kernel, relax.Tuple(args), relax.TensorType((m, n), "float32")))
        return relax.op.reshape(out, chain.out_shape)

    def _transposed_input(self, x: relax.Expr, m: int, k: int) -> relax.Var:
        """x as [K, M], emitted once per input (Q, K and V projections share it)."""
        if x not in self._transposed:
            rows = self.builder_.emit(relax.op.reshape(self.visit_expr(x), (m, k)))
            self._transposed[x] = self.builder_.emit(relax.op.permute_dims(rows, [1, 0]))
        return self._transposed[x]
