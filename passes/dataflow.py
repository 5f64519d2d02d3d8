"""What the graph passes share: a Relax function's bindings and users, and operand helpers."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant  # relax.const(...) builds a GenericConst, a Constant


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
