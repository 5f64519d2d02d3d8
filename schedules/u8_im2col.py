"""im2col for integer convolutions: NCHW bytes -> [rows, columns] bytes, row b*OH*OW + y*OW + x,
column c*KH*KW + ky*KW + kx, out-of-image taps (and the padding rows and columns the integer
kernels want) filled with the activations' zero point.

Output rows of one image row run in parallel; per (c, ky, kx) the innermost loop walks the output
columns x, so the reads are one contiguous run of the input row (stride 1) and the writes, one byte
per output row, stay within the few KB of rows being filled, in L1. A generic elementwise
im2col (divisions and a bounds test per byte, in row-major order) was ~4x slower on squeezenet.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled


ROW_MULTIPLE = 16  # rows padded to whole 16-row vectors and 8-row tiles of the integer kernels
COLUMN_MULTIPLE = 4  # columns padded to whole vpdpbusd groups (their weights are zero)


@dataclass(frozen=True)
class ConvGeometry:
    """An ungrouped NCHW/OIHW convolution's shapes."""

    batch: int
    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int]  # top, left (bottom and right follow from the output size)
    dilation: tuple[int, int]
    out_height: int
    out_width: int

    @property
    def rows(self) -> int:
        return self.batch * self.out_height * self.out_width

    @property
    def columns(self) -> int:
        return self.channels * self.kernel[0] * self.kernel[1]

    @property
    def padded_rows(self) -> int:
        return -(-self.rows // ROW_MULTIPLE) * ROW_MULTIPLE

    @property
    def padded_columns(self) -> int:
        return -(-self.columns // COLUMN_MULTIPLE) * COLUMN_MULTIPLE


def u8_im2col_kernel(shape: ConvGeometry, dtype: str, pad_value: int) -> tirx.PrimFunc:
    B, C, H, W = shape.batch, shape.channels, shape.height, shape.width
    KH, KW = shape.kernel
    SH, SW = shape.strides
    PT, PL = shape.padding
    DH, DW = shape.dilation
    OH, OW = shape.out_height, shape.out_width
    rows, columns, PR, PC = shape.rows, shape.columns, shape.padded_rows, shape.padded_columns

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((B, C, H, W), dtype), out: T.Buffer((PR, PC), dtype)):
        T.func_attr({"tirx.noalias": True})
        for image_row in T.parallel(B * OH):
            for c, ky, kx in T.grid(C, KH, KW):
                for ox in T.serial(OW):
                    with T.sblock("im2col"):
                        T.reads()
                        T.writes()
                        y = image_row % OH * SH - PT + ky * DH
                        xx = ox * SW - PL + kx * DW
                        inside = y >= 0 and y < H and xx >= 0 and xx < W
                        out[image_row * OW + ox, (c * KH + ky) * KW + kx] = T.if_then_else(
                            inside, x[image_row // OH, c, T.max(T.min(y, H - 1), 0), T.max(T.min(xx, W - 1), 0)], T.Cast(dtype, pad_value)
                        )
            if PC > columns:
                for ox, extra in T.grid(OW, PC - columns):
                    out[image_row * OW + ox, columns + extra] = T.Cast(dtype, pad_value)
        for row, column in T.grid(PR - rows, PC):
            out[rows + row, column] = T.Cast(dtype, pad_value)

    return mark_scheduled(kernel, "U8Im2col")
