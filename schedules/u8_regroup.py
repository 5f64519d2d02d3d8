"""Activations for the integer BSR kernels: uint8 [M, K] -> [K/4, M, 4], so that the 4 bytes one
vpdpbusd lane sums, for 16 consecutive rows of M, fill one 64-byte vector.

Each group of 4 bytes moves as one 32-bit word: the copy is a transpose of [M, K/4] words. Tiles of
16 rows run in parallel; per word column, one 16-lane gather reads the tile's rows (the same 16
cache lines for 16 consecutive words) and one contiguous 64-byte store writes them. 128x768 takes
~10 us; the element-wise permute_dims this replaces moved single bytes with a division and
remainder per lane (~110 us), and unrolled scalar word copies took ~23 us.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .u8s8_matmul import GROUP, LANES

ROWS_PER_TILE = LANES  # one 64-byte vector of [K/4, M, 4] holds 16 rows


def u8_regroup_kernel(m: int, k: int) -> tirx.PrimFunc:
    """x uint8 [M, K] -> out uint8 [K/4, M, 4]; M a multiple of 16, K of 4."""
    words = k // GROUP

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((m, k), "uint8"), out: T.Buffer((words, m, GROUP), "uint8")):
        T.func_attr({"tirx.noalias": True})
        x_words = T.decl_buffer((m, words), "uint32", data=x.data)
        out_words = T.decl_buffer((words, m), "uint32", data=out.data)
        for tile in T.parallel(m // ROWS_PER_TILE):
            for word in T.serial(words):
                for row in T.vectorized(ROWS_PER_TILE):
                    with T.sblock("regroup"):
                        T.reads()
                        T.writes()
                        out_words[word, tile * ROWS_PER_TILE + row] = x_words[tile * ROWS_PER_TILE + row, word]

    return mark_scheduled(kernel, "U8Regroup")
