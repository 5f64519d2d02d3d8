"""Compute at compile time what the schedules repack from constants: a kernel that wants a weight
in another layout (schedules/f32_matmul.py: [K, N] -> [N / NR, K, NR] panels) copies it in a
block annotated `meta_schedule.layout_rewrite_preproc`; relax.transform.SplitLayoutRewritePreproc
moves that block into a function of the weight alone, which FoldConstant then runs. TVM's split
visits every PrimFunc and fails on a hand-written kernel with a loop nest that holds no block, so
it is given only the kernels that repack something."""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.ir.transform import PassContext, module_pass

from sparsec.schedules.f32_matmul import PREPROC_ANNOTATION


@module_pass(opt_level=0, name="sparsec.RepackConstants")
class RepackConstants:
    def transform_module(self, mod: tvm.IRModule, _ctx: PassContext) -> tvm.IRModule:
        kernels = {gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
        others = {gv: f for gv, f in kernels.items() if not repacks_a_parameter(f)}
        if len(others) == len(kernels):
            return mod
        repacking = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv not in others}, attrs=mod.attrs)
        split = relax.transform.SplitLayoutRewritePreproc()(repacking)
        for gv, func in others.items():
            split[gv] = func
        return tvm.transform.Sequential([relax.transform.FoldConstant(), relax.transform.DeadCodeElimination()])(split)


def repacks_a_parameter(func: tirx.PrimFunc) -> bool:
    """Whether a loop nest at the function's root computes an annotated repacking block."""
    root = func.body.block if isinstance(func.body, s_tir.stmt.SBlockRealize) else None
    if root is None:
        return False
    statements = root.body.seq if isinstance(root.body, tirx.stmt.SeqStmt) else [root.body]
    for statement in statements:
        while isinstance(statement, tirx.stmt.For):
            statement = statement.body
        if isinstance(statement, s_tir.stmt.SBlockRealize) and PREPROC_ANNOTATION in statement.block.annotations:
            return True
    return False
