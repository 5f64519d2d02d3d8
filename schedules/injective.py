"""Fallback rule for everything the specific rules did not take: element-wise and layout ops,
pooling, gathers. Each block gets its leading spatial loops fused and run in parallel, and its
innermost loop vectorized when it is spatial, one register of its widest element type per vector
(64 lanes for a copy of bytes: at 16 lanes, BERT's int8 head permutes took 2.2-3x longer)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .common import block_iter_kinds, loop_extent, vector_lanes, vectorize_innermost

# Parallel loops shorter than this are not worth a fork-join on the thread pool.
MIN_PARALLEL_EXTENT = 2


class Injective(ScheduleRule):
    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        _inline_intermediates(sch)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            schedule_injective_block(sch, block, vector_lanes(target))
        return sch


def widest_element_bits(block: tirx.stmt.SBlock) -> int:
    """Of the buffers a block reads and writes; bool counts as a byte."""
    return max(max(region.source.dtype.bits, 8) for region in [*block.reads, *block.writes])


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
    """`lanes`: 32-bit lanes of a vector, the side of a transpose's square tiles; an element-wise
    block's vectors hold as many of its widest element type as fit."""
    loops = sch.get_loops(block)
    kinds = block_iter_kinds(sch, block)
    if not loops or len(loops) != len(kinds):
        return  # a block with opaque iterators or already nested: leave it serial
    n_leading_spatial = len(kinds) - len(kinds.lstrip("S"))
    if n_leading_spatial == len(kinds) and _tile_transpose(sch, block, lanes):
        return
    elementwise_lanes = lanes * 32 // widest_element_bits(sch.get(block))
    if n_leading_spatial == len(kinds) and vectorize_innermost(sch, block, elementwise_lanes):
        outer = sch.get_loops(block)[:-1]
    else:
        outer = loops[:n_leading_spatial]
    if not outer:
        return
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    extent = sch.get(fused).extent
    if not isinstance(extent, tirx.IntImm) or int(extent) >= MIN_PARALLEL_EXTENT:
        sch.parallel(fused)


def _tile_transpose(sch: s_tir.Schedule, block, lanes: int) -> bool:
    """A transpose (an input whose contiguous axis follows another output axis than the
    output's own): copy it in lanes x lanes tiles, so both sides touch whole cache lines;
    element-wise vectors would gather one element per cache line."""
    loops = sch.get_loops(block)
    iter_vars = [iv.var for iv in sch.get(block).iter_vars]
    axis = _input_contiguous_axis(sch.get(block), iter_vars)
    if axis is None or axis == len(iter_vars) - 1:
        return False
    extents = [loop_extent(sch, loops[axis]), loop_extent(sch, loops[-1])]
    if any(e is None or e % lanes for e in extents):
        return False
    row_outer, row_inner = sch.split(loops[axis], [None, lanes])
    col_outer, col_inner = sch.split(loops[-1], [None, lanes])
    outer = [*loops[:axis], row_outer, *loops[axis + 1 : -1], col_outer]
    sch.reorder(*outer, row_inner, col_inner)
    sch.parallel(sch.fuse(*outer))
    sch.unroll(row_inner)
    sch.vectorize(col_inner)
    return True


def _input_contiguous_axis(block: tirx.stmt.SBlock, iter_vars) -> int | None:
    """The innermost block axis that drives the last index of the first input read, or None
    when the input is not read element by element from the block's own axes."""
    reads = [r for r in block.reads if not r.source.same_as(block.writes[0].source)]
    if len(reads) != 1 or len(iter_vars) < 2:
        return None
    last_index = reads[0].region[-1]
    if not (isinstance(last_index.extent, tirx.IntImm) and int(last_index.extent) == 1):
        return None
    used = tirx.analysis.undefined_vars(last_index.min)
    axes = [i for i, var in enumerate(iter_vars) if any(var.same_as(u) for u in used)]
    return axes[-1] if axes else None
