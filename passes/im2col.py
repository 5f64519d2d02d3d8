"""Convolutions as matrix products: an NCHW convolution's input unrolled into rows, one per output
pixel, of (input channel, kernel row, kernel column) values, so an integer convolution runs on the
integer matmul kernels. Padding takes the activations' zero point (the quantized 0.0)."""

from __future__ import annotations

from tvm import relax

from sparsec.schedules.u8_im2col import ConvGeometry, u8_im2col_kernel


def conv_geometry(conv: relax.Call, weight_shape: tuple[int, ...]) -> ConvGeometry | None:
    """The shapes of an ungrouped NCHW/OIHW conv2d; None for any other convolution."""
    attrs = conv.attrs
    layouts = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW")
    if not layouts or int(attrs.groups) != 1 or len(weight_shape) != 4:
        return None
    batch, channels, height, width = (int(d) for d in conv.args[0].ty.shape.values)
    *_, out_height, out_width = (int(d) for d in conv.ty.shape.values)
    pair = lambda values: (int(values[0]), int(values[1]))  # noqa: E731
    return ConvGeometry(
        batch, channels, height, width, pair(weight_shape[2:]), pair(attrs.strides), pair(attrs.padding[:2]), pair(attrs.dilation), out_height, out_width
    )


def im2col(builder: relax.BlockBuilder, x: relax.Expr, geometry: ConvGeometry, pad_value: int) -> relax.Var:
    """x [B, C, H, W] -> [padded rows, padded columns] (schedules/u8_im2col.py)."""
    dtype = str(x.ty.dtype)
    kernel = builder.add_func(u8_im2col_kernel(geometry, dtype, pad_value), "u8_im2col")
    out_type = relax.TensorType((geometry.padded_rows, geometry.padded_columns), dtype)
    return builder.emit(relax.call_tir(kernel, relax.Tuple([x]), out_type))


def from_rows(builder: relax.BlockBuilder, rows: relax.Expr, geometry: ConvGeometry, channels: int) -> relax.Expr:
    """The product [padded rows, channels] back to NCHW [B, channels, OH, OW]."""
    g = geometry
    valid = builder.emit(relax.op.strided_slice(rows, axes=[0], begin=[0], end=[g.rows]))
    per_image = builder.emit(relax.op.reshape(valid, (g.batch, g.out_height * g.out_width, channels)))
    channels_first = builder.emit(relax.op.permute_dims(per_image, [0, 2, 1]))
    return relax.op.reshape(channels_first, (g.batch, channels, g.out_height, g.out_width))
