"""What the graph passes share: a Relax function's bindings and users, and operand helpers."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant  # relax.const(...) builds a GenericConst, a Constant
from tvm.relax.expr_functor import PyExprMutator


class Dataflow:
    """A function's bindings and, for each variable, the bindings that use it (None: the
    function's result)."""

    def __init__(self, func: relax.Function):
        self.bindings = {b.var: b.value for block in func.body.blocks for b in block.bindings}
        self.users: dict[relax.Var, list[relax.Var | None]] = {}
        for var, value in self.bindings.items():
            for used in relax.analysis.free_vars(value):
                self.users.setdefault(used, []).append(var)
        for used in relax.analysis.free_vars(func.body.body):
            self.users.setdefault(used, []).append(None)

    def only_user(self, var: relax.Var) -> relax.Var | None:
        found = self.users.get(var, [])
        return found[0] if len(found) == 1 else None

    def only_user_call(self, var: relax.Var, op_name: str) -> relax.Var | None:
        user = self.only_user(var)
        return user if user is not None and is_op(self.bindings[user], op_name) else None


def call_tir_sites(mod: tvm.IRModule):
    """Every call_tir of the module's Relax functions, in order."""
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            for block in func.body.blocks:
                yield from (b.value for b in block.bindings if is_op(b.value, "relax.call_tir"))


def is_op(value: relax.Expr, name: str) -> bool:
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name


def other_operand(call: relax.Call, operand: relax.Expr) -> relax.Expr | None:
    lhs, rhs = call.args
    return rhs if lhs.same_as(operand) else lhs if rhs.same_as(operand) else None


def bound_value(expr: relax.Expr, bindings) -> relax.Expr:
    """What a variable of the function is bound to; any other expression as it is."""
    return bindings.get(expr, expr) if isinstance(expr, relax.Var) else expr


def constant_array(expr: relax.Expr, bindings) -> np.ndarray | None:
    """The value of a constant, or of a variable bound to reshape(constant) (ONNX biases)."""
    value = bound_value(expr, bindings)
    if value is not expr and is_op(value, "relax.reshape") and isinstance(value.args[0], Constant):
        return value.args[0].value.numpy().reshape([int(d) for d in value.ty.shape.values])
    return value.value.numpy() if isinstance(value, Constant) else None


def per_tensor_quantization(call: relax.Call, bindings) -> tuple[float, int] | None:
    """(scale, zero point) of a quantize or dequantize call whose both are constant scalars."""
    scale, zero_point = constant_array(call.args[1], bindings), constant_array(call.args[2], bindings)
    if scale is None or zero_point is None or scale.size != 1 or zero_point.size != 1:
        return None
    return float(scale.reshape(())), int(zero_point.reshape(()))


class BindingRewriter(PyExprMutator):
    """What the graph passes' mutators share (subclass it, decorated with @mutator):
    `prepare(graph)` sees each Relax function's Dataflow before the function is visited;
    `rewrite(binding)` returns the expression that replaces a binding's value, or None to keep
    the binding. The replacement is emitted in the binding's place, as a dataflow variable or a
    block output like the original. By default `prepare` keeps the function's bindings in
    `self.bindings`."""

    def __init__(self, mod: tvm.IRModule | None = None):
        super().__init__(mod)
        self.bindings: dict = {}

    def prepare(self, graph: Dataflow) -> None:
        self.bindings = graph.bindings

    def rewrite(self, binding: relax.VarBinding) -> relax.Expr | None:
        raise NotImplementedError

    def visit_var_binding_(self, binding) -> None:
        replacement = self.rewrite(binding)
        if replacement is None:
            super().visit_var_binding_(binding)
            return
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(replacement))


def rewrite_functions(rewriter: BindingRewriter, mod: tvm.IRModule) -> tvm.IRModule:
    """Run `rewriter` over every Relax function of `mod`, then drop what nothing uses anymore."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.prepare(Dataflow(func))
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get())
