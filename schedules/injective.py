"""Fallback rule for everything the specific rules did not take: element-wise and layout ops,
pooling, gathers. Each block gets its leading spatial loops fused and run in parallel, and its
innermost loop vectorized when it is spatial."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .common import block_iter_kinds, vector_lanes, vectorize_innermost

# Parallel loops shorter than this are not worth a fork-join on the thread pool.
MIN_PARALLEL_EXTENT = 2


class Injective(ScheduleRule):
    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        lanes = vector_lanes(target)
        _inline_intermediates(sch)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            schedule_injective_block(sch, block, lanes)
        return sch


def _inline_intermediates(sch: s_tir.Schedule) -> None:
    """Fold every block that only feeds others into its consumers, so a chain of layout and
    element-wise ops becomes one pass over memory."""
    root = sch.get_sblock("root")
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
    for block in sch.get_child_blocks(root):
        if sch.get(block).name_hint in outputs:
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass  # a reduction or a multi-consumer producer stays a block of its own


def schedule_injective_block(sch: s_tir.Schedule, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    kinds = block_iter_kinds(sch, block)
    if not loops or len(loops) != len(kinds):
        return  # a block with opaque iterators or already nested: leave it serial
    n_leading_spatial = len(kinds) - len(kinds.lstrip("S"))
    if n_leading_spatial == len(kinds) and vectorize_innermost(sch, block, lanes):
        outer = sch.get_loops(block)[:-1]
    else:
        outer = loops[:n_leading_spatial]
    if not outer:
        return
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    extent = sch.get(fused).extent
    if not isinstance(extent, tirx.IntImm) or int(extent) >= MIN_PARALLEL_EXTENT:
        sch.parallel(fused)
