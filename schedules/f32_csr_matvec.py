"""fp32 unstructured-sparse layers at small batch: out[M, N] = act(x[M, K] @ W[K, N] + bias) (+ residual)
with W^T in CSR, each output row's nonzeros padded to a multiple of 16 (weight 0, column 0).

At M <= 8 neither BSR order has enough work per vector: `rows` vectors span the block's one
output channel, `columns` vectors span M. Here a vector spans 16 nonzeros of one output channel:
16 weights are loaded contiguously, the 16 activations they multiply are gathered (vgatherdps),
and the lanes are summed once per output. Output channels run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .common import without_param
from .epilogues import activation

LANES = 16
MAX_ROWS = 1  # of M: the gather stops vectorizing across several rows (measured: 4 rows 30x slower)


@dataclass(frozen=True)
class CSRShape:
    m: int
    k: int
    n: int
    stored: int  # padded nonzeros


def pack_padded_csr(weight_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """data f32, indices i32, indptr i32 [N + 1] with every row's length a multiple of 16."""
    csr = scipy.sparse.csr_matrix(weight_nk)
    csr.eliminate_zeros()
    lengths = np.diff(csr.indptr)
    padded_lengths = -(-lengths // LANES) * LANES
    indptr = np.concatenate([[0], np.cumsum(padded_lengths)]).astype(np.int32)
    data = np.zeros(max(int(indptr[-1]), LANES), np.float32)
    indices = np.zeros(data.shape, np.int32)
    for row in range(weight_nk.shape[0]):
        start, count = indptr[row], lengths[row]
        data[start : start + count] = csr.data[csr.indptr[row] : csr.indptr[row + 1]]
        indices[start : start + count] = csr.indices[csr.indptr[row] : csr.indptr[row + 1]]
    return data, indices, indptr


def csr_matvec_kernel(shape: CSRShape, activation_name: str | None = None, residual: bool = False) -> tirx.PrimFunc:
    """x [M, K], data, indices, indptr, bias [N], (residual [M, N]) -> out [M, N]."""
    M, K, N, stored = shape.m, shape.k, shape.n, shape.stored
    act = activation(activation_name)
    residual_shape = (M, N) if residual else (1,)

    def finish(value, residual_buffer, m, n):
        value = act(value)
        return value + residual_buffer[m, n] if residual else value

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        x: T.Buffer((M, K), "float32"),
        data: T.Buffer((stored,), "float32"),
        indices: T.Buffer((stored,), "int32"),
        indptr: T.Buffer((N + 1,), "int32"),
        bias: T.Buffer((N,), "float32"),
        residual_buffer: T.Buffer(residual_shape, "float32"),
        out: T.Buffer((M, N), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for n in T.parallel(N):
            with T.sblock("csr_row"):
                T.reads()
                T.writes()
                acc = T.sblock_alloc_buffer((M, LANES), "float32")
                total = T.sblock_alloc_buffer((M,), "float32")
                for r in T.unroll(M):
                    for lane in T.vectorized(LANES):
                        acc[r, lane] = T.float32(0)
                for j in T.serial((indptr[n + 1] - indptr[n]) // LANES):
                    for r in T.unroll(M):
                        for lane in T.vectorized(LANES):
                            acc[r, lane] = acc[r, lane] + data[indptr[n] + j * LANES + lane] * x[r, indices[indptr[n] + j * LANES + lane]]
                for r in T.unroll(M):
                    total[r] = bias[n]
                    for lane in T.unroll(LANES):
                        total[r] = total[r] + acc[r, lane]
                    out[r, n] = finish(total[r], residual_buffer, r, n)

    func = mark_scheduled(kernel, "F32CSRMatvec")
    return func if residual else without_param(func, "residual_buffer")
