"""Row-wise normalizations: softmax, layer norm, RMS norm: reductions along the innermost axis
followed by an element-wise pass over the same rows.

Rows run in parallel, every block of a row under one loop so the row stays in L1. Each
reduction is split into vector-wide partial sums (rfactor) so its adds are independent vector
ops; a serial scalar sum (what DLight's CPU Reduction emits) waits on the add latency for every
element. Functions of another shape are left to the next rule.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .common import block_iter_kinds, loop_extent, vector_lanes, vectorize_innermost
from .injective import MIN_PARALLEL_EXTENT


class RowReduction(ScheduleRule):
    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        root = sch.get_sblock("root")
        _inline_elementwise_producers(sch)
        blocks = sch.get_child_blocks(root)
        kinds = [block_iter_kinds(sch, b) for b in blocks]
        if "R" in kinds[-1] or not any("R" in k for k in kinds) or not all(_reduces_innermost_only(k) for k in kinds):
            return None
        row_axes = len(kinds[-1]) - 1
        if any(len(k) != row_axes + 1 or len(sch.get_loops(b)) != row_axes + 1 for k, b in zip(kinds, blocks)):
            return None  # every block must walk the same rows, one inner axis each
        lanes = vector_lanes(target)
        partial_sums = [_vector_partial_sums(sch, b, lanes) for b, k in zip(blocks, kinds) if k.endswith("R")]
        if any(rf is None for rf in partial_sums):
            return None

        output = sch.get_child_blocks(root)[-1]
        row_loops = sch.get_loops(output)[:row_axes]
        rows = sch.fuse(*row_loops) if len(row_loops) > 1 else row_loops[0]
        if (loop_extent(sch, rows) or MIN_PARALLEL_EXTENT) >= MIN_PARALLEL_EXTENT:
            sch.parallel(rows)
        for block in reversed(sch.get_child_blocks(root)[:-1]):
            sch.compute_at(block, rows, preserve_unit_loops=True)
        for block in sch.get_child_blocks(root):
            if "R" not in block_iter_kinds(sch, block):
                vectorize_innermost(sch, block, lanes)
        for rf in partial_sums:
            # compute_at laid the partial-sum block's loops out in its iterator order: the
            # lane loop first under the row, the reduction last. Lanes go innermost, as vectors.
            under_row = sch.get_loops(rf)[1:]
            lane, reduction = under_row[0], under_row[-1]
            sch.reorder(reduction, lane)
            sch.vectorize(lane)
            sch.decompose_reduction(rf, reduction)
        return sch


def _inline_elementwise_producers(sch: s_tir.Schedule) -> None:
    """Fold spatial blocks into their consumers (a cast, a mean, a centered value), except a
    full-row value that several blocks read (softmax's exp feeds the sum and the division):
    recomputing that costs more than storing it in a row buffer."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    row_rank = len(sch.get(blocks[-1]).iter_vars)
    for block in blocks[:-1]:
        kinds = block_iter_kinds(sch, block)
        if "R" in kinds or (len(kinds) == row_rank and len(sch.get_consumers(block)) > 1):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass


def _reduces_innermost_only(kinds: str) -> bool:
    return "R" not in kinds[:-1] and "O" not in kinds


def _vector_partial_sums(sch: s_tir.Schedule, block, lanes: int):
    """Split the reduction into `lanes` interleaved partial sums; returns the partial-sum block."""
    inner = sch.get_loops(block)[-1]
    extent = loop_extent(sch, inner)
    if extent is None or extent % lanes or extent <= lanes:
        return None
    _, lane = sch.split(inner, [None, lanes])
    try:
        return sch.rfactor(lane, factor_axis=len(sch.get(block).iter_vars) - 1)
    except s_tir.ScheduleError:
        return None  # not a commutative reduction TVM can split (e.g. an argmax)


