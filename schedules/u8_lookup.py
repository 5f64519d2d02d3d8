"""Element-wise functions of one quantized byte (passes/qdq_lut.py): out[i] = table[x[i]], with
x uint8 or int8 (offset by 128) and a 256-entry table of the output bytes.

Two instruction paths, chosen by the target:
- `vbmi` (AVX-512 VBMI): the table sits in four registers; vpermi2b looks up 64 bytes in one
  128-entry half per instruction (index bits 0-6), and the byte's top bit picks the half.
  128x3072 bytes: ~9 us on 2 Zen 4 threads.
- `scalar`: 16 unrolled scalar lookups per step from a table that stays in L1: ~110 us for the
  same bytes. (A 16-lane vpgatherdd from an int32 table was no faster on Zen 4.)
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled

SCALAR_LANES = 16  # scalar lookups per unrolled step
VBMI_LANES = 64  # bytes per vpermi2b
HALF = 128  # table entries one vpermi2b indexes (two 64-byte registers)
CHUNK = 16384  # elements per parallel task


def u8_lookup_kernel(size: int, in_dtype: str, out_dtype: str, vbmi: bool = False) -> tirx.PrimFunc:
    """x [size] in_dtype, table int32 [256] (indexed by x, + 128 for int8) -> out [size] out_dtype."""
    offset = 128 if in_dtype == "int8" else 0
    lanes = VBMI_LANES if vbmi else SCALAR_LANES
    vectors = size // lanes
    per_task = CHUNK // lanes
    tasks = -(-vectors // per_task)
    vector_type = f"int8x{VBMI_LANES}"

    def permute(table_bytes, x_bytes, half):
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpermi2var.qi.512"),
            table_bytes.vload([half * HALF], vector_type),
            x_bytes,
            table_bytes.vload([half * HALF + VBMI_LANES], vector_type),
            dtype=vector_type,
        )

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((size,), in_dtype), table: T.Buffer((256,), "int32"), out: T.Buffer((size,), out_dtype)):
        T.func_attr({"tirx.noalias": True})
        for task in T.parallel(tasks):
            with T.sblock("lookup"):
                T.reads()
                T.writes()
                if vbmi:
                    # the table as bytes indexed by x's raw byte (for int8 the halves swap places)
                    table_bytes = T.sblock_alloc_buffer((256,), "int8")
                    for half in T.unroll(2):
                        for j in T.vectorized(HALF):
                            table_bytes[half * HALF + j] = T.Cast("int8", table[(half * HALF + j + offset) % 256])
                    for v in T.serial(per_task):
                        # the last task's surplus vectors redo the last vector: same bytes, no branch
                        start = T.min(task * per_task + v, vectors - 1) * VBMI_LANES
                        x_bytes = T.reinterpret(x.vload([start], f"{in_dtype}x{VBMI_LANES}"), dtype=vector_type)
                        out[T.ramp(start, 1, VBMI_LANES)] = T.reinterpret(
                            T.Select(
                                x_bytes < T.broadcast(T.int8(0), VBMI_LANES),  # raw byte >= 128
                                permute(table_bytes, x_bytes, 1),
                                permute(table_bytes, x_bytes, 0),
                            ),
                            dtype=f"{out_dtype}x{VBMI_LANES}",
                        )
                else:
                    for v in T.serial(per_task):
                        for lane in T.unroll(SCALAR_LANES):
                            out[T.min(task * per_task + v, vectors - 1) * SCALAR_LANES + lane] = T.Cast(
                                out_dtype,
                                table[T.Cast("int32", x[T.min(task * per_task + v, vectors - 1) * SCALAR_LANES + lane]) + offset],
                            )
        for i in T.serial(size - vectors * lanes):
            with T.sblock("lookup_tail"):
                T.reads()
                T.writes()
                out[vectors * lanes + i] = T.Cast(out_dtype, table[T.Cast("int32", x[vectors * lanes + i]) + offset])

    return mark_scheduled(kernel, "U8LookupVBMI" if vbmi else "U8Lookup")
