"""fp32 matmul family: dense layers (constant weights, after FoldConstant stored [K, N]) and
batched matmuls (attention), each with its fused element-wise epilogue.

The schedule is a register-blocked micro-kernel: an MR x NR output tile stays in vector
registers while the reduction loop streams one row of A (broadcast) and one NR-wide row of B
(vector loads) per step. Output tiles are walked column-panel first so the K x NR panel of B
stays in L2 across all row tiles, and the tiles are shared out over the thread pool. The
epilogue (bias, activation, residual) runs on each tile right after it is computed, while it is
still in registers.

A constant B (a layer's weight: the function's "layout_free_buffers") is repacked at compile time
into [N / NR, K, NR], one contiguous K x NR panel per column tile: read from memory, the [K, N]
panel is K rows of NR floats N floats apart, which the hardware prefetchers follow badly once
the weights no longer sit in cache (in a model, every layer's weights come from DRAM: 128x3072x768
176 -> 213 GFLOP/s with cold weights). The repacking is a block the compiler splits out and
evaluates on the constant (SplitLayoutRewritePreproc + FoldConstant), so it costs nothing at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .common import (
    MAX_REGISTER_TILE_BYTES,
    block_iter_kinds,
    find_mac_block,
    inline_epilogue,
    loop_extent,
    vector_lanes,
    vectorize_innermost,
)

# Zen 4 and Intel cores retire two FMAs a cycle with a 4-cycle latency: at least 8 independent
# accumulators hide it; more than ~16 spill the 32 vector registers.
MIN_ACCUMULATORS = 8
MAX_ACCUMULATORS = 16
ROW_TILE_CANDIDATES = (4, 8, 2, 6, 3, 1)


@dataclass(frozen=True)
class MatmulTile:
    rows: int  # MR
    vectors: int  # NR / lanes
    lanes: int

    @property
    def cols(self) -> int:
        return self.vectors * self.lanes


def choose_tile(m: int, n: int, lanes: int, dtype_bytes: int = 4) -> MatmulTile:
    """The largest register tile that divides the output (so no predicate lands in the
    micro-kernel) and fits the register file."""
    best = None
    for rows in ROW_TILE_CANDIDATES:
        if m % rows:
            continue
        for vectors in range(MAX_ACCUMULATORS // rows, 0, -1):
            cols = vectors * lanes
            if n % cols or rows * cols * dtype_bytes > MAX_REGISTER_TILE_BYTES:
                continue
            score = (min(rows * vectors, MIN_ACCUMULATORS * 2), rows * vectors)
            if best is None or score > best[0]:
                best = (score, MatmulTile(rows, vectors, lanes))
            break
    if best is not None:
        return best[1]
    # N is not a multiple of the vector width: one vector-wide column tile, tail predicated.
    rows = next(r for r in ROW_TILE_CANDIDATES if m % r == 0)
    return MatmulTile(rows, 1, min(lanes, n))


def find_matmul_block(sch: s_tir.Schedule) -> s_tir.schedule.SBlockRV | None:
    """The function's multiply-accumulate block, if it has matmul iterators: [batch..., i, j, k]."""
    block = find_mac_block(sch)
    if block is None:
        return None
    kinds = block_iter_kinds(sch, block)
    return block if kinds.count("R") == 1 and kinds.endswith("R") and kinds.count("S") >= 2 else None


ORDERS = ("panels", "rows")  # tiles walked column panel first (B panel stays in L2) or row first
K_UNROLLS = (1, 4)


def tile_space(m: int, n: int, k: int, lanes: int) -> list[dict]:
    """Every register tile that divides the output and fits the register file, with each tile
    walk order, reduction unroll and (column panels first) B panel packing, as knobs."""
    return [
        {"rows": rows, "vectors": vectors, "order": order, "unroll_k": unroll, "pack_b": pack}
        for rows in ROW_TILE_CANDIDATES
        if m % rows == 0
        for vectors in range(1, MAX_ACCUMULATORS // rows + 1)
        if n % (vectors * lanes) == 0 and rows * vectors * lanes * 4 <= MAX_REGISTER_TILE_BYTES
        for order in ORDERS
        for unroll in K_UNROLLS
        if k % unroll == 0
        for pack in ((False, True) if order == "panels" else (False,))
    ]


class F32Matmul(ScheduleRule):
    """Tunable: `space()` lists knobs {"rows": MR, "vectors": NR / lanes}; `apply_knobs` uses one."""

    family = "f32_matmul"

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        return self.apply_knobs(func, target, None)

    def space(self, func: tirx.PrimFunc, target: Target) -> list[dict]:
        sch = s_tir.Schedule(func)
        matmul = find_matmul_block(sch)
        if matmul is None or sch.get(matmul).body.buffer.dtype != "float32":
            return []
        *_, i, j, k = sch.get_loops(matmul)
        m, n, reduction = loop_extent(sch, i), loop_extent(sch, j), loop_extent(sch, k)
        return [] if None in (m, n, reduction) else tile_space(m, n, reduction, vector_lanes(target))

    def default_knobs(self, func: tirx.PrimFunc, target: Target) -> dict | None:
        """The knobs `apply` picks, when they are in the space."""
        sch = s_tir.Schedule(func)
        matmul = find_matmul_block(sch)
        *_, i, j, _k = sch.get_loops(matmul)
        tile = choose_tile(loop_extent(sch, i), loop_extent(sch, j), vector_lanes(target))
        knobs = {"rows": tile.rows, "vectors": tile.vectors, "order": ORDERS[0], "unroll_k": 1, "pack_b": False}
        return knobs if knobs in self.space(func, target) else None

    def apply_knobs(self, func: tirx.PrimFunc, target: Target, knobs: dict | None) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        matmul = find_matmul_block(sch)
        if matmul is None or sch.get(matmul).body.buffer.dtype != "float32":
            return None
        epilogue = inline_epilogue(sch, matmul)
        if epilogue is False:
            return None
        *batch, i, j, k = sch.get_loops(matmul)
        m, n = loop_extent(sch, i), loop_extent(sch, j)
        if m is None or n is None:
            return None
        lanes = vector_lanes(target)
        tile = choose_tile(m, n, lanes) if knobs is None else MatmulTile(knobs["rows"], knobs["vectors"], lanes)
        order, unroll_k = (knobs or {}).get("order", ORDERS[0]), (knobs or {}).get("unroll_k", 1)
        prepack = _constant_weight_panels(sch, matmul, func, n, tile.cols)
        pack = (knobs or {}).get("pack_b", False) and order == "panels" and not prepack
        io, ii = sch.split(i, [None, tile.rows])
        jo, jv, jl = sch.split(j, [None, tile.vectors, tile.lanes])
        if prepack:
            _prepack_weight_panels(sch, matmul, tile.cols)
        ko, ki = sch.split(k, [None, unroll_k])
        outer = (jo, io) if order == "panels" else (io, jo)
        sch.reorder(*batch, *outer, ko, ki, ii, jv, jl)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, outer[1])
            vectorize_innermost(sch, epilogue, tile.lanes)
        if pack:  # copy the K x NR panel of B once per panel: the row tiles then stream it contiguously
            panel = sch.cache_read(matmul, 1, "global")
            sch.compute_at(panel, jo)
            vectorize_innermost(sch, panel, tile.lanes)
            sch.parallel(jo)
        else:
            sch.parallel(sch.fuse(*batch, *outer))
        sch.vectorize(jl)
        sch.unroll(jv)
        sch.unroll(ii)
        if unroll_k > 1:
            sch.unroll(ki)
        init = sch.decompose_reduction(matmul, ko)
        vectorize_innermost(sch, init, tile.lanes)
        return sch


LAYOUT_FREE_ATTR = "layout_free_buffers"  # constant parameters, set by passes/mark_constant_params.py
PREPROC_ANNOTATION = "meta_schedule.layout_rewrite_preproc"  # what SplitLayoutRewritePreproc splits out


def _constant_weight_panels(sch: s_tir.Schedule, matmul, func: tirx.PrimFunc, n: int, panel: int) -> bool:
    """Whether B is a 2-D constant parameter read as B[k, j] and whole panels tile N."""
    free = func.attrs.get(LAYOUT_FREE_ATTR) if func.attrs is not None else None
    if not free or n % panel:
        return False
    block = sch.get(matmul)
    loads = _loads(block.body.value.b)
    if len(loads) != 2:
        return False
    b = loads[1]
    params = [sch.mod["main"].params[int(i)] for i in free]
    if not any(param.same_as(b.source) for param in params) or len(b.indices) != 2:
        return False
    k_var, j_var = block.iter_vars[-1].var, block.iter_vars[-2].var
    return b.indices[0].same_as(k_var) and b.indices[1].same_as(j_var)


def _loads(expr) -> list:
    if isinstance(expr, TensorLoad):
        return [expr]
    return [load for child in (getattr(expr, "a", None), getattr(expr, "b", None)) if child is not None for load in _loads(child)]


def _prepack_weight_panels(sch: s_tir.Schedule, matmul, panel: int) -> None:
    packed = sch.cache_read(matmul, 1, "global")
    sch.transform_layout(matmul, ("read", 1), lambda k, j: (j // panel, k, j % panel))
    sch.annotate(packed, PREPROC_ANNOTATION, True)
