"""Mark the parameters of each kernel that every call site binds to a constant (a layer's weights)
as "layout_free_buffers", the attribute a schedule reads before it repacks one at compile time
(schedules/f32_matmul.py). relax.transform.AttachAttrLayoutFreeBuffers marks the same, but
re-adds every function to the module and so renames them all (`dense` -> `dense1`): the kernel
names are what the compile report, the profiles and the tuning logs show."""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.ir.expr import Constant
from tvm.ir.transform import PassContext, module_pass

from sparsec.schedules.f32_matmul import LAYOUT_FREE_ATTR

from .dataflow import call_tir_sites


@module_pass(opt_level=0, name="sparsec.MarkConstantParams")
class MarkConstantParams:
    def transform_module(self, mod: tvm.IRModule, _ctx: PassContext) -> tvm.IRModule:
        constant: dict[tvm.ir.GlobalVar, set[int]] = {}
        for call in call_tir_sites(mod):
            args = call.args[1].fields
            indices = {i for i, arg in enumerate(args) if isinstance(arg, Constant)}
            kernel = call.args[0]
            constant[kernel] = constant[kernel] & indices if kernel in constant else indices
        for kernel, indices in constant.items():
            func = mod[kernel]
            if indices and isinstance(func, tirx.PrimFunc):
                mod[kernel] = func.with_attr(LAYOUT_FREE_ATTR, sorted(indices))
        return mod

