"""fp32 block-sparse (BSR) x dense kernels: out[M, N] = act(x[M, K] @ W[K, N] + bias[N]) where W^T
is stored as BSR with R x C blocks (R output channels x C reduction steps).

Two loop orders, chosen per layer (measured on a 2-core Zen 4, M=128, K=N=768, 90% sparse):
- `rows`: activations row-major; one vector spans a block's R output channels and an MR x R
  accumulator tile walks the nonzero blocks of a block row. Best for R >= 8 (16x1: 85 us) and for
  small M, where it needs no transpose (M=1, 16x1: 3 us).
- `columns`: activations transposed to [K, M]; one vector spans MT rows of M and an R x MT tile
  broadcasts one weight per output channel. Best for narrow blocks at large M (1x1: 195 us,
  4x1: 110 us, 4x4: 83 us); the caller provides x^T.
Both run block rows in parallel, skip empty block rows for free (their loop is empty), and apply
the epilogue on the register tile. Kernels are generic in the sparsity pattern: only the shapes
and the number of stored blocks are baked in (baking every nonzero into the code made LLVM
compile times explode, see shared/TVM027.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .common import MAX_REGISTER_TILE_BYTES, without_param
from .epilogues import activation
from .tunable import TunableFamily, bsr_shape_key, divisors_among, tag

ROW_TILE_CANDIDATES = (8, 4, 2, 1)
COLUMN_TILE_CANDIDATES = (64, 32, 16, 8, 4, 2, 1)
MIN_STORED_CHANNELS = 8  # columns order, [M, N] output: channels stored together per row of M


@dataclass(frozen=True)
class BSRShape:
    m: int
    k: int
    n: int
    block_rows: int  # R, along the output (N) axis
    block_cols: int  # C, along the reduction (K) axis
    stored_blocks: int

    @property
    def block_row_count(self) -> int:
        return self.n // self.block_rows


@dataclass(frozen=True)
class BSREpilogue:
    """What the kernel does to its register tile before the store:
    out = activation(acc + bias) (+ residual), stored as [M, N] or, `transposed_output`, [N, M]
    (the [K, M] input the next `columns` layer reads, without a transpose in between, and a 1x1
    convolution's CHW). The residual is laid out like the output."""

    activation: str | None = None  # see epilogues.ACTIVATIONS
    residual: bool = False  # an extra input, laid out like the output, added last
    transposed_output: bool = False

    def suffix(self) -> str:
        parts = [self.activation or "", "residual" if self.residual else "", "nm" if self.transposed_output else ""]
        return "".join(f"_{part}" for part in parts if part)


def _rows_space(shape: BSRShape) -> list[dict]:
    return [{"rows": t} for t in divisors_among(shape.m, ROW_TILE_CANDIDATES) if t * shape.block_rows * 4 <= MAX_REGISTER_TILE_BYTES]


def bsr_rows_kernel(shape: BSRShape, epilogue: BSREpilogue = BSREpilogue(), knobs: dict | None = None) -> tirx.PrimFunc:
    """x [M, K], data [blocks, C, R], indices [blocks], indptr [N/R + 1], bias [N] -> out [M, N].
    Tile: MR rows of M x the block's R outputs, vectors along R. Knobs: {"rows": MR}."""
    R, C = shape.block_rows, shape.block_cols
    knobs = knobs or _rows_space(shape)[0]
    MR = knobs["rows"]
    return _tagged("f32_bsr_rows", shape, epilogue, knobs, mark_scheduled(
        _bsr_kernel(
            shape,
            epilogue,
            tile=(MR, R),
            group=1,
            channel_axis="b",
            rows_per_step=MR,
            x_shape=(shape.m, shape.k),
            data_shape=(C, R),
            product=lambda x, data, block, k, c, a, b, mo: x[mo * MR + a, k] * data[block, c, b],
            out_row=lambda a, b, mo: mo * MR + a,
            out_channel=lambda a, b, nb: nb * R + b,
        ),
        "F32BSRRows",
    ))


def _columns_default(shape: BSRShape, epilogue: BSREpilogue) -> dict:
    # an [M, N] store of a narrow block row writes R floats per cache line: group block rows
    wanted = 1 if epilogue.transposed_output else max(1, MIN_STORED_CHANNELS // shape.block_rows)
    G = next(g for g in (wanted, 1) if shape.block_row_count % g == 0)
    MT = next(t for t in COLUMN_TILE_CANDIDATES if shape.m % t == 0 and t * G * shape.block_rows * 4 <= MAX_REGISTER_TILE_BYTES)
    return {"group": G, "tile": MT}


def _columns_space(shape: BSRShape) -> list[dict]:
    return [
        {"group": g, "tile": t}
        for g in divisors_among(shape.block_row_count, (1, 2, 4, 8, 16))
        for t in divisors_among(shape.m, COLUMN_TILE_CANDIDATES)
        if t * g * shape.block_rows * 4 <= MAX_REGISTER_TILE_BYTES and (t >= 8 or t == shape.m)
    ]


def bsr_columns_kernel(shape: BSRShape, epilogue: BSREpilogue = BSREpilogue(), knobs: dict | None = None) -> tirx.PrimFunc:
    """xT [K, M], data [blocks, R, C], indices [blocks], indptr [N/R + 1], bias [N] -> out [M, N].
    Tile: the block's R outputs x MT rows of M, vectors along M. Knobs: {"group": G block rows
    per tile, "tile": MT}."""
    R, C = shape.block_rows, shape.block_cols
    knobs = knobs or _columns_default(shape, epilogue)
    G, MT = knobs["group"], knobs["tile"]
    return _tagged("f32_bsr_columns", shape, epilogue, knobs, mark_scheduled(
        _bsr_kernel(
            shape,
            epilogue,
            tile=(R, MT),
            group=G,
            channel_axis="a",
            rows_per_step=MT,
            x_shape=(shape.k, shape.m),
            data_shape=(R, C),
            product=lambda x, data, block, k, c, a, b, mo: data[block, a, c] * x[k, mo * MT + b],
            out_row=lambda a, b, mo: mo * MT + b,
            out_channel=lambda a, b, nb: nb * R + a,
        ),
        "F32BSRColumns",
    ))


def _tagged(family: str, shape: BSRShape, epilogue: BSREpilogue, knobs: dict, func: tirx.PrimFunc) -> tirx.PrimFunc:
    return tag(func, family, {"shape": asdict(shape), "epilogue": asdict(epilogue)}, knobs)


def _from_workload(workload: dict) -> tuple[BSRShape, BSREpilogue]:
    return BSRShape(**workload["shape"]), BSREpilogue(**workload["epilogue"])


def _tuning_key(workload: dict) -> dict:
    shape = BSRShape(**workload["shape"])
    blocks = (shape.n // shape.block_rows) * (shape.k // shape.block_cols)
    return {**bsr_shape_key(workload["shape"], blocks), "epilogue": workload["epilogue"]}


TUNABLE = [
    TunableFamily("f32_bsr_rows", lambda w: _rows_space(_from_workload(w)[0]), lambda w, knobs: bsr_rows_kernel(*_from_workload(w), knobs), _tuning_key),
    TunableFamily("f32_bsr_columns", lambda w: _columns_space(_from_workload(w)[0]), lambda w, knobs: bsr_columns_kernel(*_from_workload(w), knobs), _tuning_key),
]


def _bsr_kernel(shape: BSRShape, epilogue: BSREpilogue, tile, group, channel_axis, rows_per_step, x_shape, data_shape, product, out_row, out_channel) -> tirx.PrimFunc:
    """The loop nest both orders share: groups of `group` block rows in parallel, a (group * A) x B
    register tile (B the vector lanes) per step of `mo`, the nonzero blocks of each block row, then
    the epilogue.
    `channel_axis` names the tile axis that spans output channels; the closures say how tile
    coordinates map onto x, the block data and the output."""
    M, N, C, nnz = shape.m, shape.n, shape.block_cols, shape.stored_blocks
    NB = shape.block_row_count
    A, B = tile
    G = group
    steps = M // rows_per_step
    act = activation(epilogue.activation)
    out_shape = (N, M) if epilogue.transposed_output else (M, N)
    # the store's vector lanes run along the output's contiguous axis, whichever tile axis that is
    store_lanes_along_b = (channel_axis == "b") != epilogue.transposed_output
    residual_shape = out_shape if epilogue.residual else (1,)

    def out_index(m, n, axis):  # the output's (and residual's) index along `axis` for element (m, n)
        return (n, m)[axis] if epilogue.transposed_output else (m, n)[axis]

    def finish(value, residual, m, n):
        value = act(value)
        return value + residual[out_index(m, n, 0), out_index(m, n, 1)] if epilogue.residual else value

    # tile element (ga, b): row ga % A of block row nbo * G + ga // A
    def tile_out_index(ga, b, mo, nbo, axis):
        return out_index(out_row(ga % A, b, mo), out_channel(ga % A, b, nbo * G + ga // A), axis)

    def tile_value(acc, bias, residual, ga, b, mo, nbo):
        m, n = out_row(ga % A, b, mo), out_channel(ga % A, b, nbo * G + ga // A)
        return finish(acc[ga, b] + bias[n], residual, m, n)

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        x: T.Buffer(x_shape, "float32"),
        data: T.Buffer((nnz, *data_shape), "float32"),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((NB + 1,), "int32"),
        bias: T.Buffer((N,), "float32"),
        residual: T.Buffer(residual_shape, "float32"),
        out: T.Buffer(out_shape, "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for nbo in T.parallel(NB // G):
            for mo in T.serial(steps):
                with T.sblock("bsr_tile"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((G * A, B), "float32")
                    for ga in T.unroll(G * A):
                        for b in T.vectorized(B):
                            acc[ga, b] = T.float32(0)
                    for g in T.unroll(G):
                        for j in T.serial(indptr[nbo * G + g + 1] - indptr[nbo * G + g]):
                            for c in T.unroll(C):
                                for a in T.unroll(A):
                                    for b in T.vectorized(B):
                                        acc[g * A + a, b] = acc[g * A + a, b] + product(
                                            x, data, indptr[nbo * G + g] + j, indices[indptr[nbo * G + g] + j] * C + c, c, a, b, mo
                                        )
                    if store_lanes_along_b:
                        for ga in T.unroll(G * A):
                            for b in T.vectorized(B):
                                out[tile_out_index(ga, b, mo, nbo, 0), tile_out_index(ga, b, mo, nbo, 1)] = tile_value(acc, bias, residual, ga, b, mo, nbo)
                    else:
                        for b in T.unroll(B):
                            for ga in T.vectorized(G * A):
                                out[tile_out_index(ga, b, mo, nbo, 0), tile_out_index(ga, b, mo, nbo, 1)] = tile_value(acc, bias, residual, ga, b, mo, nbo)

    return kernel if epilogue.residual else without_param(kernel, "residual")

