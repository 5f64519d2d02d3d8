"""Element-wise functions of one quantized byte (passes/qdq_lut.py): out[i] = table[x[i]], with
x uint8 or int8 (offset by 128) and a 256-entry table of the output bytes.

Scalar lookups from a table that stays in L1, 16 per unrolled step, in parallel chunks:
128x3072 bytes take ~85 us on 2 threads. A 16-lane vpgatherdd from an int32 table was no faster
on Zen 4 (and 1.7x slower for int8 inputs); Relax's take needed a separate int32 index pass.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled

LANES = 16  # lookups per unrolled step
CHUNK = 4096  # elements per parallel task


def u8_lookup_kernel(size: int, in_dtype: str, out_dtype: str) -> tirx.PrimFunc:
    """x [size] in_dtype, table int32 [256] -> out [size] out_dtype."""
    offset = 128 if in_dtype == "int8" else 0
    vectors = size // LANES
    per_task = CHUNK // LANES
    tasks = -(-vectors // per_task)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((size,), in_dtype), table: T.Buffer((256,), "int32"), out: T.Buffer((size,), out_dtype)):
        T.func_attr({"tirx.noalias": True})
        for task in T.parallel(tasks):
            for v in T.serial(per_task):
                for lane in T.unroll(LANES):
                    with T.sblock("lookup"):
                        T.reads()
                        T.writes()
                        # the last task's surplus vectors redo the last vector: same bytes, no branch
                        out[T.min(task * per_task + v, vectors - 1) * LANES + lane] = T.Cast(
                            out_dtype, table[T.Cast("int32", x[T.min(task * per_task + v, vectors - 1) * LANES + lane]) + offset]
                        )
        for i in T.serial(size - vectors * LANES):
            with T.sblock("lookup_tail"):
                T.reads()
                T.writes()
                out[vectors * LANES + i] = T.Cast(out_dtype, table[T.Cast("int32", x[vectors * LANES + i]) + offset])

    return mark_scheduled(kernel, "U8Lookup")
