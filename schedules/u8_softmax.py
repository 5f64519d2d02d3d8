"""Softmax of quantized rows into quantized rows (passes/qdq_softmax.py): for x = s (q - z),
softmax(x)_j = exp(-s (qmax - q_j)) / sum_i exp(-s (qmax - q_i)), and qmax - q_j is a byte
difference, so the exponentials come from a 256-entry float table built at compile time. Per
row: the byte maximum, 16-lane table gathers summed in vector partial sums, one reciprocal, and
the output quantized on the way out. No float input row is ever written.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .u8s8_matmul import Requantize

LANES = 16  # float32 lanes of a 512-bit vector


def u8_softmax_kernel(rows: int, length: int, in_dtype: str, output: Requantize) -> tirx.PrimFunc:
    """x [rows, length] in_dtype, exp table f32 [256] (exp(-s d) for byte differences d) ->
    out [rows, length] quantized with `output`; length a multiple of 16."""
    vectors = length // LANES

    def gather(table, indices):  # LLVM scalarizes a vectorized table read; vgatherdps is ~2x faster
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.mask.gather.dps.512"),
            T.broadcast(T.float32(0), LANES),
            T.address_of(table[0]),
            indices,
            T.broadcast(T.bool(True), LANES),
            T.int32(4),
            dtype=f"float32x{LANES}",
        )

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((rows, length), in_dtype), exp_table: T.Buffer((256,), "float32"), out: T.Buffer((rows, length), output.dtype)):
        T.func_attr({"tirx.noalias": True})
        for r in T.parallel(rows):
            with T.sblock("softmax_row"):
                T.reads()
                T.writes()
                top = T.sblock_alloc_buffer((LANES,), "int32")
                total = T.sblock_alloc_buffer((LANES,), "float32")
                exps = T.sblock_alloc_buffer((length,), "float32")
                for lane in T.vectorized(LANES):
                    top[lane] = T.Cast("int32", x[r, lane])
                for v in T.serial(vectors - 1):
                    for lane in T.vectorized(LANES):
                        top[lane] = T.max(top[lane], T.Cast("int32", x[r, (v + 1) * LANES + lane]))
                # tree reductions (a serial one waits on every step): 16 -> 8 -> 4 -> 2 -> 1 lanes
                for lane in T.vectorized(8):
                    top[lane] = T.max(top[lane], top[lane + 8])
                for lane in T.vectorized(4):
                    top[lane] = T.max(top[lane], top[lane + 4])
                for lane in T.vectorized(2):
                    top[lane] = T.max(top[lane], top[lane + 2])
                top[0] = T.max(top[0], top[1])
                for lane in T.vectorized(LANES):
                    total[lane] = T.float32(0)
                for v in T.serial(vectors):
                    exps[T.ramp(v * LANES, 1, LANES)] = gather(
                        exp_table, T.broadcast(top[0], LANES) - T.Cast(f"int32x{LANES}", x.vload([r, v * LANES], f"{in_dtype}x{LANES}"))
                    )
                    for lane in T.vectorized(LANES):
                        total[lane] = total[lane] + exps[v * LANES + lane]
                for lane in T.vectorized(8):
                    total[lane] = total[lane] + total[lane + 8]
                for lane in T.vectorized(4):
                    total[lane] = total[lane] + total[lane + 4]
                for lane in T.vectorized(2):
                    total[lane] = total[lane] + total[lane + 2]
                total[0] = total[0] + total[1]
                total[1] = T.float32(1) / (total[0] * T.float32(output.scale))
                for v in T.serial(vectors):
                    for lane in T.vectorized(LANES):
                        out[r, v * LANES + lane] = T.Cast(output.dtype, output.from_scaled(exps[v * LANES + lane] * total[1]))

    return mark_scheduled(kernel, "U8Softmax")
