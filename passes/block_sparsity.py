"""Per-layer sparse-or-dense decision for a constant weight, from its own zero pattern.

For every candidate block shape the weight is cut into R x C blocks (R output channels x C
reduction steps); a block is stored if any of its values is nonzero. The estimated time of a
BSR layer is its stored multiply-accumulates over the throughput its kernel reaches with that
block shape (measured, below), plus the activation transpose the `columns` loop order needs; the
layer goes sparse when that beats the dense kernel. `sparsity_threshold` and `block` override
the decision and the block choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

# Measured 2026-11-22 on a 2-core AMD EPYC (Zen 4), M=128, K=N=768, 90% block-sparse, fp32, 2 threads:
# GFLOP/s on the stored values per (loop order, block shape) (see schedules/f32_bsr_matmul.py;
# reproduce with `python benchmarks/bsr_kernels.py`). `rows` with fewer than 4 block rows is left out (mostly empty vectors).
BSR_THROUGHPUT = {
    ("rows", (16, 1)): 194.0,
    ("rows", (8, 1)): 100.0,
    ("rows", (4, 1)): 44.0,
    ("rows", (4, 4)): 60.0,
    ("columns", (16, 1)): 196.0,
    ("columns", (8, 1)): 175.0,
    ("columns", (4, 1)): 177.0,
    ("columns", (4, 4)): 150.0,
    ("columns", (1, 4)): 81.0,
    ("columns", (1, 1)): 78.0,
    # schedules/f32_csr_matvec.py, unstructured only, M = 1: K=N=2048, 90%, measured alone
    ("gather", (1, 1)): 8.0,
}
GATHER_MAX_ROWS = 1
ROWS_ORDER_TILE = 8  # rows of M the table's `rows` figures had per tile (M=128)
CANDIDATE_BLOCKS = (16, 1), (8, 1), (4, 1), (4, 4), (1, 4), (1, 1)
DENSE_THROUGHPUT = 227.0  # GFLOP/s of schedules/f32_matmul.py on the same layer
# a batch-1 dense MLP (23 MB of weights) ran in 0.28 ms: weights stream from L3 at ~80 GB/s
DENSE_WEIGHT_BYTES_PER_SECOND = 80e9
TRANSPOSE_BYTES_PER_SECOND = 40e9  # a [128, 768] fp32 transpose takes ~15-20 us (tiled, schedules/injective.py)
# The cost model is rough (one measured shape): a layer goes sparse only when it predicts at least
# this gain, so a dense weight never lands in a BSR kernel that merely ties with dense.
MIN_ESTIMATED_SPEEDUP = 1.3
# Below this many rows the columns order's vectors are mostly empty: only `rows` is used.
MIN_ROWS_FOR_COLUMNS_ORDER = 16


@dataclass(frozen=True)
class LayerPlan:
    sparse: bool
    block: tuple[int, int]
    loop_order: str  # "rows" | "columns" | "gather" | "dense"
    sparsity: float  # fraction of exact zeros in the weight
    density: float  # stored fraction of the weight in this block shape (zeros inside kept blocks count)
    estimated_speedup: float  # dense time / sparse time for this layer


def zero_fraction(weight: np.ndarray) -> float:
    """The weight's sparsity: the fraction of its values that are exactly zero."""
    return float(np.count_nonzero(weight == 0) / weight.size) if weight.size else 0.0


def _goes_sparse(sparsity: float, sparsity_threshold: float | None, estimated_speedup: float) -> bool:
    """The user's threshold when given, else the cost model's estimate."""
    if sparsity_threshold is not None:
        return sparsity >= sparsity_threshold
    return estimated_speedup >= MIN_ESTIMATED_SPEEDUP


def block_density(weight_nk: np.ndarray, block: tuple[int, int]) -> float:
    rows, cols = block
    n, k = weight_nk.shape
    if n % rows or k % cols:
        return 1.0
    stored = (weight_nk.reshape(n // rows, rows, k // cols, cols) != 0).any(axis=(1, 3))
    return float(stored.mean())


def plan_layer(
    weight_nk: np.ndarray,
    m: int,
    sparsity_threshold: float | None = None,
    block: tuple[int, int] | None = None,
    input_transposed: bool = False,
    columns_only: bool = False,
) -> LayerPlan:
    """Choose dense or BSR (with block shape and loop order) for out[m, n] = x[m, k] @ W^T.
    `input_transposed`: x^T comes for free (a `columns` producer can write it).
    `columns_only`: the data is laid out for the `columns` order (a 1x1 convolution's NCHW)."""
    n, k = weight_nk.shape
    sparsity = zero_fraction(weight_nk)
    # at small M a dense layer streams its weight more than it computes
    dense_seconds = max(2.0 * m * n * k / (DENSE_THROUGHPUT * 1e9), 4.0 * n * k / DENSE_WEIGHT_BYTES_PER_SECOND)
    forced = block is not None
    if columns_only:
        orders = ("columns",)
    else:
        orders = ("rows",) if m < MIN_ROWS_FOR_COLUMNS_ORDER else ("rows", "columns")
        orders += ("gather",) if m <= GATHER_MAX_ROWS else ()
    best = None
    for shape in [block] if block is not None else CANDIDATE_BLOCKS:
        if n % shape[0] or k % shape[1]:
            continue
        density = block_density(weight_nk, shape)
        for order in orders:
            if order == "gather" and shape != (1, 1):
                continue
            throughput = BSR_THROUGHPUT.get((order, shape), _unmeasured_throughput(order, shape, forced))
            if throughput is None:
                continue
            if order == "columns":  # its vectors run along M: below 16 rows they are part empty
                throughput *= min(m, MIN_ROWS_FOR_COLUMNS_ORDER) / MIN_ROWS_FOR_COLUMNS_ORDER
            if order == "rows":  # each loaded block feeds a tile of up to 8 rows of M (16x1: 1/5 at M=1)
                throughput *= max(min(m, ROWS_ORDER_TILE) / ROWS_ORDER_TILE, 0.2)
            stored_bytes = n * k * density * (4.0 + 4.0 / (shape[0] * shape[1]))  # values + one index per block
            seconds = max(2.0 * m * n * k * density / (throughput * 1e9), stored_bytes / DENSE_WEIGHT_BYTES_PER_SECOND)
            if order == "columns" and not input_transposed:
                seconds += 2.0 * m * k * 4 / TRANSPOSE_BYTES_PER_SECOND
            if best is None or seconds < best[0]:
                best = (seconds, shape, order, density)
    if best is None:
        return LayerPlan(False, (1, 1), "dense", sparsity, 1.0, 1.0)
    seconds, shape, order, density = best
    speedup = dense_seconds / max(seconds, 1e-12)
    sparse = _goes_sparse(sparsity, sparsity_threshold, speedup)
    return LayerPlan(sparse, shape, order if sparse else "dense", sparsity, density, speedup)


def _unmeasured_throughput(order: str, shape: tuple[int, int], forced: bool) -> float | None:
    """Only a block shape forced by --block runs where nothing was measured: assume it is as
    slow as the slowest measured kernel, scaled down when its vectors are mostly empty."""
    if not forced:
        return None
    slowest = min(t for (o, _), t in BSR_THROUGHPUT.items() if o == order)
    return slowest * min(shape[0], 4) / 4 if order == "rows" else slowest


def pack_bsr(weight_nk: np.ndarray, block: tuple[int, int], loop_order: str):
    """BSR arrays of W^T [N, K]: data laid out for the kernel's loop order, int32 indices."""
    bsr = scipy.sparse.bsr_matrix(weight_nk, blocksize=block)
    bsr.eliminate_zeros()  # drop blocks that are entirely zero
    bsr.sort_indices()
    data = bsr.data.astype(np.float32)  # [blocks, R, C]
    if loop_order == "rows":
        data = data.transpose(0, 2, 1)  # [blocks, C, R]: a block's R outputs are contiguous
    if data.shape[0] == 0:  # an all-zero weight still needs a non-empty buffer
        data = np.zeros((1, *data.shape[1:]), np.float32)
    return np.ascontiguousarray(data), bsr.indices.astype(np.int32), bsr.indptr.astype(np.int32)


# int8 on VNNI (schedules/u8s8_bsr_matmul.py, blocks R x 4) relative to the dense VNNI kernel, fitted
# as overhead + per_density * density to `python benchmarks/int8_bsr_kernels.py [--pruned-as 4x1 |
# 1x1]` (2026-12-05, BERT-base's three layer shapes, M=128, 2 threads, densities 0.10-1.0): the epilogue
# costs a few percent of the dense layer, and 4- and 16-row blocks run their stored MACs about as fast
# as the dense kernel (one activation load serves R channels), 1-row blocks at about half that speed.
INT8_BSR_COST = {16: (0.055, 0.955), 4: (0.06, 0.99), 1: (0.03, 1.9)}  # R: (overhead, per_density)


@dataclass(frozen=True)
class Int8LayerPlan:
    sparse: bool
    block_rows: int  # R of the R x 4 blocks
    sparsity: float
    density: float
    estimated_speedup: float


def plan_int8_layer(weight_nk: np.ndarray, m: int, sparsity_threshold: float | None = None) -> Int8LayerPlan:
    """Dense VNNI or BSR VNNI with R x 4 blocks for an int8 weight, as plan_layer does for fp32."""
    sparsity = zero_fraction(weight_nk)
    n, k = weight_nk.shape
    best = None
    for rows, (overhead, per_density) in INT8_BSR_COST.items():
        if n % rows or k % 4:
            continue
        density = block_density(weight_nk, (rows, 4))
        relative_cost = overhead + per_density * density  # of the dense kernel's time
        if best is None or relative_cost < best[0]:
            best = (relative_cost, rows, density)
    if best is None:
        return Int8LayerPlan(False, 1, sparsity, 1.0, 1.0)
    relative_cost, rows, density = best
    speedup = 1.0 / relative_cost
    return Int8LayerPlan(_goes_sparse(sparsity, sparsity_threshold, speedup), rows, sparsity, density, speedup)
