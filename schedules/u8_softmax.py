"""Softmax of quantized rows into quantized rows (passes/qdq_softmax.py): for x = s (q - z),
softmax(x)_j = exp(-s (qmax - q_j)) / sum_i exp(-s (qmax - q_i)), and qmax - q_j is a byte
difference d, so the exponentials come from tables built at compile time:
exp(-s d) = exp(-16 s (d >> 4)) exp(-s (d & 15)), two 16-entry tables that each fit one register
and are read with a vpermps (BERT's 1536x128 bytes: 55 -> 32 us against one 256-entry table read
with vgatherdps; the product is within two ulps of the exact exponential). Per row: the byte
maximum, the table products summed in vector partial sums, one reciprocal, and the output
quantized on the way out. No float input row is ever written.
"""

from __future__ import annotations

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .u8s8_matmul import Requantize

LANES = 16  # float32 lanes of a 512-bit vector
TABLE_LANES = 16  # entries of each exp table: one register


def exp_tables(scale: float) -> np.ndarray:
    """[exp(-16 s i) for i < 16] + [exp(-s i) for i < 16]: their products give exp(-s d), d < 256."""
    steps = np.arange(TABLE_LANES, dtype=np.float64)
    return np.concatenate([np.exp(-TABLE_LANES * scale * steps), np.exp(-scale * steps)]).astype(np.float32)


def u8_softmax_kernel(rows: int, length: int, in_dtype: str, output: Requantize) -> tirx.PrimFunc:
    """x [rows, length] in_dtype, exp tables f32 [32] (`exp_tables`) -> out [rows, length]
    quantized with `output`; length a multiple of 16."""
    vectors = length // LANES

    def lookup(table, offset, indices):
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.permvar.sf.512"),
            table.vload([offset], f"float32x{LANES}"),
            indices,
            dtype=f"float32x{LANES}",
        )

    def difference(x, r, v, top):  # qmax - q of 16 elements (an assignment would allocate a buffer per row)
        return T.broadcast(top[0], LANES) - T.Cast(f"int32x{LANES}", x.vload([r, v * LANES], f"{in_dtype}x{LANES}"))

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((rows, length), in_dtype), exp_table: T.Buffer((2 * TABLE_LANES,), "float32"), out: T.Buffer((rows, length), output.dtype)):
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
                    exps[T.ramp(v * LANES, 1, LANES)] = lookup(exp_table, 0, T.shift_right(difference(x, r, v, top), T.broadcast(4, LANES))) * lookup(
                        exp_table, TABLE_LANES, T.bitwise_and(difference(x, r, v, top), T.broadcast(TABLE_LANES - 1, LANES))
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
