"""fp32 conv2d family, NCHW activations and OIHW weights (as ONNX stores them), with its fused
epilogue (bias, folded batch norm, activation, residual add).

Register-blocked like the matmul kernel: a tile of FR output channels x XR output columns stays
in registers while the reduction over (input channel, kernel row, kernel column) broadcasts one
weight per output channel and loads one contiguous run of input pixels. The padded input is
materialized once by its own parallel loop, so the inner loop carries no bounds checks. Grouped
and depthwise convolutions take the same schedule (their input index differs, not the loops).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .common import (
    MAX_REGISTER_TILE_BYTES,
    block_iter_kinds,
    find_mac_block,
    inline_epilogue,
    largest_divisor_at_most,
    loop_extent,
    vector_lanes,
    vectorize_innermost,
)
from .injective import schedule_injective_block

CHANNEL_TILE_CANDIDATES = (8, 4, 2, 1)


class F32Conv2dNCHW(ScheduleRule):
    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        conv = find_mac_block(sch)
        if conv is None or block_iter_kinds(sch, conv) != "SSSSRRR":
            return None
        if sch.get(conv).body.buffer.dtype != "float32":
            return None
        producers = list(sch.get_child_blocks(sch.get_sblock("root")))
        epilogue = inline_epilogue(sch, conv, allowed_before=1)
        if epilogue is False:
            return None
        lanes = vector_lanes(target)
        n, f, y, x, rc, ry, rx = sch.get_loops(conv)
        channels, width = loop_extent(sch, f), loop_extent(sch, x)
        if channels is None or width is None:
            return None
        x_tile = largest_divisor_at_most(width, lanes)
        f_tile = next(c for c in CHANNEL_TILE_CANDIDATES if channels % c == 0 and c * x_tile * 4 <= MAX_REGISTER_TILE_BYTES)
        fo, fi = sch.split(f, [None, f_tile])
        xo, xi = sch.split(x, [None, x_tile])
        sch.reorder(n, fo, y, xo, rc, ry, rx, fi, xi)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, xo)
            vectorize_innermost(sch, epilogue, lanes)
        sch.parallel(sch.fuse(n, fo, y))
        sch.vectorize(xi)
        sch.unroll(fi)
        init = sch.decompose_reduction(conv, rc)
        vectorize_innermost(sch, init, lanes)
        padding = producers[0]
        if not sch.get(padding).same_as(sch.get(conv)):
            schedule_injective_block(sch, padding, lanes)
        return sch
