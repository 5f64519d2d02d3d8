"""Activations for the integer BSR kernels: uint8 [M, K] -> [M/T, K/4, T, 4], so that the 4 bytes
one vpdpbusd lane sums, for 16 consecutive rows of M, fill one 64-byte vector, and a tile of T rows
is one contiguous block. The kernels walk row tiles outermost: as [K/4, M, 4] (M = 128), a 32-row
tile was 128-byte pieces 512 bytes apart, which fall into a quarter of L1's sets (measured:
128x3072 -> 768 at 90%, 160 -> 136 us; 768-wide layers ~2%).

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

ROWS_PER_TILE = LANES  # one 64-byte vector of the regrouped rows holds 16 rows


def regrouped_tile_rows(m: int) -> int:
    """T: rows of M per contiguous block of the regrouped activations."""
    return 2 * LANES if m % (2 * LANES) == 0 else LANES


def regrouped_shape(m: int, k: int) -> tuple[int, int, int, int]:
    tile = regrouped_tile_rows(m)
    return (m // tile, k // GROUP, tile, GROUP)


def u8_regroup_kernel(m: int, k: int) -> tirx.PrimFunc:
    """x uint8 [M, K] -> out uint8 [M/T, K/4, T, 4]; M a multiple of 16, K of 4."""
    words, tile_rows = k // GROUP, regrouped_tile_rows(m)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((m, k), "uint8"), out: T.Buffer(regrouped_shape(m, k), "uint8")):
        T.func_attr({"tirx.noalias": True})
        x_words = T.decl_buffer((m, words), "uint32", data=x.data)
        out_words = T.decl_buffer((m // tile_rows, words, tile_rows), "uint32", data=out.data)
        for tile in T.parallel(m // ROWS_PER_TILE):
            for word in T.serial(words):
                for row in T.vectorized(ROWS_PER_TILE):
                    with T.sblock("regroup"):
                        T.reads()
                        T.writes()
                        out_words[(tile * ROWS_PER_TILE + row) // tile_rows, word, (tile * ROWS_PER_TILE + row) % tile_rows] = x_words[tile * ROWS_PER_TILE + row, word]

    return mark_scheduled(kernel, "U8Regroup")
