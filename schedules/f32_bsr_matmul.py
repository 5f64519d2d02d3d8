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

from collections.abc import Callable
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from .apply import SCHEDULE_RULE_ATTR
from .common import MAX_REGISTER_TILE_BYTES

ROW_TILE_CANDIDATES = (8, 4, 2, 1)
COLUMN_TILE_CANDIDATES = (64, 32, 16, 8, 4, 2, 1)


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


def _activation(name: str | None) -> Callable:
    if name is None:
        return lambda value: value
    if name == "relu":
        return lambda value: T.max(value, T.float32(0))
    raise ValueError(f"unsupported fused activation {name!r}")


def bsr_rows_kernel(shape: BSRShape, activation: str | None = None) -> tirx.PrimFunc:
    """x [M, K], data [blocks, C, R], indices [blocks], indptr [N/R + 1], bias [N] -> out [M, N]."""
    M, K, N, R, C, nnz = shape.m, shape.k, shape.n, shape.block_rows, shape.block_cols, shape.stored_blocks
    NB = shape.block_row_count
    MR = next(t for t in ROW_TILE_CANDIDATES if M % t == 0 and t * R * 4 <= MAX_REGISTER_TILE_BYTES)
    act = _activation(activation)

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        x: T.Buffer((M, K), "float32"),
        data: T.Buffer((nnz, C, R), "float32"),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((NB + 1,), "int32"),
        bias: T.Buffer((N,), "float32"),
        out: T.Buffer((M, N), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for nb in T.parallel(NB):
            for mo in T.serial(M // MR):
                with T.sblock("bsr_rows_tile"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((MR, R), "float32")
                    for mi in T.unroll(MR):
                        for r in T.vectorized(R):
                            acc[mi, r] = T.float32(0)
                    for j in T.serial(indptr[nb + 1] - indptr[nb]):
                        for c in T.unroll(C):
                            for mi in T.unroll(MR):
                                for r in T.vectorized(R):
                                    acc[mi, r] = acc[mi, r] + x[mo * MR + mi, indices[indptr[nb] + j] * C + c] * data[indptr[nb] + j, c, r]
                    for mi in T.unroll(MR):
                        for r in T.vectorized(R):
                            out[mo * MR + mi, nb * R + r] = act(acc[mi, r] + bias[nb * R + r])

    return _scheduled(kernel, "F32BSRRows")


def bsr_columns_kernel(shape: BSRShape, activation: str | None = None) -> tirx.PrimFunc:
    """xT [K, M], data [blocks, R, C], indices [blocks], indptr [N/R + 1], bias [N] -> out [M, N]."""
    M, K, N, R, C, nnz = shape.m, shape.k, shape.n, shape.block_rows, shape.block_cols, shape.stored_blocks
    NB = shape.block_row_count
    MT = next(t for t in COLUMN_TILE_CANDIDATES if M % t == 0 and t * R * 4 <= MAX_REGISTER_TILE_BYTES)
    act = _activation(activation)

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        xT: T.Buffer((K, M), "float32"),
        data: T.Buffer((nnz, R, C), "float32"),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((NB + 1,), "int32"),
        bias: T.Buffer((N,), "float32"),
        out: T.Buffer((M, N), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for nb in T.parallel(NB):
            for mo in T.serial(M // MT):
                with T.sblock("bsr_columns_tile"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((R, MT), "float32")
                    for r in T.unroll(R):
                        for mi in T.vectorized(MT):
                            acc[r, mi] = T.float32(0)
                    for j in T.serial(indptr[nb + 1] - indptr[nb]):
                        for c in T.unroll(C):
                            for r in T.unroll(R):
                                for mi in T.vectorized(MT):
                                    acc[r, mi] = acc[r, mi] + data[indptr[nb] + j, r, c] * xT[indices[indptr[nb] + j] * C + c, mo * MT + mi]
                    for r in T.unroll(R):
                        for mi in T.vectorized(MT):
                            out[mo * MT + mi, nb * R + r] = act(acc[r, mi] + bias[nb * R + r])

    return _scheduled(kernel, "F32BSRColumns")


def _scheduled(kernel: tirx.PrimFunc, family: str) -> tirx.PrimFunc:
    """The loops above are the schedule: keep the default rules off the kernel."""
    return kernel.with_attr("tirx.is_scheduled", True).with_attr(SCHEDULE_RULE_ATTR, family)
