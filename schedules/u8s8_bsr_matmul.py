"""Integer block-sparse layers on VNNI: out[M, N] = epilogue(x[M, K] . W[N, K]) where W (int8) is
stored as BSR with R x 4 blocks (R output channels x 4 reduction steps, the 4 bytes one
vpdpbusd lane sums) and x is uint8, regrouped as [M/T, K/4, T, 4] (schedules/u8_regroup.py) so
that 16 rows of M sit in one 64-byte vector.

Per stored block and per output channel a of the block, the channel's 4 weights are broadcast to
all 16 lanes and one vpdpbusd accumulates 16 rows of M; an R x MT tile reuses every activation
vector R times. Empty block rows cost nothing. The epilogue is the dense kernel's (zero-point
compensation, scale, bias, activation, optional requantize and post-requantize bias). The
accumulators hold [channels, rows]: quantized outputs are computed per channel along the rows
(full vectors) and stored as 64-bit words of 8 channels' bytes per row; float outputs read the
tile across channels.

Each vpdpbusd reads a fresh 64-byte activation vector (a 1 x 4 block serves one channel), so the
kernel is bound by where the activations come from, not by vpdpbusd: the block-row groups are
split into a few parallel chunks and each chunk walks the row tiles outermost, so one row tile
of [K/4, MT, 4] is reused by all of the chunk's channels while it sits in L1 (128x768x768 at
90%, one thread: 110 -> 88 us; one chunk per group re-streamed all activations from L2 for every
group). With K = 3072 a row tile no longer fits L1. The epilogue (requantize, post-requantize
bias, byte packing) is about a third of a 768-wide layer's time at 90%.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .tunable import TunableFamily, bsr_shape_key, divisors_among, tag
from .u8_regroup import regrouped_shape, regrouped_tile_rows
from .u8s8_matmul import GROUP, LANES, MAX_ACCUMULATORS, OutputEpilogue, PostBias, Requantize, epilogue_from_workload, epilogue_kind, epilogue_workload, output_dtype, vpdpbusd

ROWS_PER_VECTOR = LANES  # rows of M per vpdpbusd
DEFAULT_CHUNKS = 8  # parallel chunks of block-row groups: enough to balance up to 8 threads
BYTES_PER_WORD = 4
MIN_STORED_CHANNELS = 8  # narrow blocks store few bytes per cache line of [M, N]: group block rows (measured: 8 best)


@dataclass(frozen=True)
class Int8BSRShape:
    m: int
    k: int
    n: int
    block_rows: int  # R, output channels per block; the block is R x 4
    stored_blocks: int


def supports_int8_bsr(m: int, k: int, n: int, block_rows: int) -> bool:
    """The kernel needs whole 16-row vectors of M and whole blocks."""
    return m % ROWS_PER_VECTOR == 0 and k % GROUP == 0 and n % block_rows == 0


def pack_int8_bsr(weight_nk: np.ndarray, block_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """data int8 [blocks, R, 4], indices int32 (k group of each block), indptr int32 [N/R + 1]."""
    bsr = scipy.sparse.bsr_matrix(weight_nk.astype(np.int32), blocksize=(block_rows, GROUP))
    bsr.eliminate_zeros()
    bsr.sort_indices()
    data = bsr.data.astype(np.int8)
    if data.shape[0] == 0:  # an all-zero weight still needs non-empty buffers
        data, indices = np.zeros((1, block_rows, GROUP), np.int8), np.zeros(1, np.int32)
    else:
        indices = bsr.indices.astype(np.int32)
    return np.ascontiguousarray(data), indices, bsr.indptr.astype(np.int32)


def u8s8_bsr_kernel(
    shape: Int8BSRShape,
    activation_name: str | None = None,
    requantize: Requantize | None = None,
    knobs: dict | None = None,
    post_bias: PostBias | None = None,
) -> tirx.PrimFunc:
    """x u8 [M/T, K/4, T, 4], data, indices, indptr, compensation i32 [N], scale f32 [N], bias f32 [N]
    ([2 N] with `post_bias`) -> out [M, N] (f32, or the requantize dtype). Knobs: {"group": G block rows per tile,
    "vectors": 16-row vectors of M per tile}."""
    M, N, R, nnz = shape.m, shape.n, shape.block_rows, shape.stored_blocks
    NB = shape.n // R
    knobs = knobs or _default_knobs(shape)
    G, vectors = knobs["group"], knobs["vectors"]
    CHUNKS = knobs.get("chunks", NB // G)  # logs from before the knob: one chunk per block-row group
    C = G * R  # channels per tile
    MT = vectors * ROWS_PER_VECTOR
    XT = regrouped_tile_rows(M)
    out_dtype = output_dtype(requantize, post_bias)
    finish = OutputEpilogue(activation_name, requantize, post_bias)
    bias_stages = 2 if post_bias is not None else 1
    # bytes out: each channel's 16 rows are quantized in full-width vectors straight from the
    # accumulators, and 8 (or 4) channels' bytes packed into the 64-bit (32-bit) words of out's
    # rows (reading the tile across channels instead transposed it element by element: ~1/3 of
    # the kernel; 64-bit words over 32-bit ones: the epilogue ~5% faster)
    store_bytes = next((b for b in (2 * BYTES_PER_WORD, BYTES_PER_WORD) if C % b == 0 and N % b == 0), None)
    packed_bytes = requantize is not None and store_bytes is not None
    store_dtype = "int64" if store_bytes == 2 * BYTES_PER_WORD else "int32"

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        x: T.Buffer(regrouped_shape(M, shape.k), "uint8"),
        data: T.Buffer((nnz, R, GROUP), "int8"),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((NB + 1,), "int32"),
        compensation: T.Buffer((N,), "int32"),
        scale: T.Buffer((N,), "float32"),
        bias: T.Buffer((bias_stages * N,), "float32"),
        out: T.Buffer((M, N), out_dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        for chunk in T.parallel(CHUNKS):
            for mo, nbi in T.grid(M // MT, NB // G // CHUNKS):
                with T.sblock("int8_bsr_tile"):
                    T.reads()
                    T.writes()
                    nbo = chunk * (NB // G // CHUNKS) + nbi
                    acc = T.sblock_alloc_buffer((C, MT), "int32")
                    for c in T.unroll(C):
                        for b in T.vectorized(MT):
                            acc[c, b] = 0
                    for g in T.unroll(G):
                        for j in T.serial(indptr[nbo * G + g + 1] - indptr[nbo * G + g]):
                            for a in T.unroll(R):
                                for v in T.unroll(vectors):
                                    acc[g * R + a, T.ramp(v * LANES, 1, LANES)] = vpdpbusd(
                                        acc.vload([g * R + a, v * LANES], "int32x16"),
                                        T.reinterpret(x.vload([(mo * MT + v * LANES) // XT, indices[indptr[nbo * G + g] + j], (mo * MT + v * LANES) % XT, 0], "uint8x64"), dtype="int8x64"),
                                        T.reinterpret(T.broadcast(T.reinterpret(data.vload([indptr[nbo * G + g] + j, a, 0], "int8x4"), dtype="int32"), LANES), dtype="int8x64"),
                                    )
                    if packed_bytes:
                        out_words = T.decl_buffer((M, N // store_bytes), store_dtype, data=out.data)
                        for word in T.unroll(C // store_bytes):
                            for v in T.unroll(vectors):
                                for b in T.vectorized(LANES):
                                    out_words[mo * MT + v * LANES + b, nbo * (C // store_bytes) + word] = packed_bytes_word(
                                        store_bytes,
                                        lambda j: finish.channel_output(
                                            acc[word * store_bytes + j, v * LANES + b],
                                            nbo * C + word * store_bytes + j,
                                            compensation,
                                            scale,
                                            bias,
                                            (bias_stages - 1) * N,
                                            "int32",
                                        )
                                    )
                    else:
                        for b in T.unroll(MT):
                            for c in T.vectorized(C):  # channels are contiguous in out
                                out[mo * MT + b, nbo * C + c] = finish.channel_output(
                                    acc[c, b], nbo * C + c, compensation, scale, bias, (bias_stages - 1) * N
                                )

    workload = {"shape": asdict(shape), **epilogue_workload(activation_name, requantize, post_bias)}
    return tag(mark_scheduled(kernel, "U8S8BSRVNNI"), "u8s8_bsr", workload, knobs)


def packed_word(byte_code: Callable[[int], tirx.PrimExpr]) -> tirx.PrimExpr:
    """Four int32 byte codes (0-255 or -128-127) as one little-endian 32-bit word."""
    word = byte_code(0) & 0xFF
    for j in range(1, BYTES_PER_WORD):
        word = word | ((byte_code(j) & 0xFF) << (8 * j))
    return word


def packed_bytes_word(count: int, byte_code: Callable[[int], tirx.PrimExpr]) -> tirx.PrimExpr:
    """`count` (4 or 8) byte codes as one little-endian word; 8 as two 32-bit words widened once."""
    if count == BYTES_PER_WORD:
        return packed_word(byte_code)
    low, high = (T.Cast("int64", T.Cast("uint32", packed_word(lambda j, h=h: byte_code(h * BYTES_PER_WORD + j)))) for h in (0, 1))
    return low | (high << T.int64(32))


def _default_knobs(shape: Int8BSRShape) -> dict:
    # narrow blocks: G block rows per tile, so the stores write G * R contiguous channels
    G = next(g for g in (max(1, MIN_STORED_CHANNELS // shape.block_rows), 1) if (shape.n // shape.block_rows) % g == 0)
    vectors = next(v for v in (8, 4, 2, 1) if (shape.m // ROWS_PER_VECTOR) % v == 0 and G * shape.block_rows * v <= MAX_ACCUMULATORS)
    groups = shape.n // shape.block_rows // G
    return {"group": G, "vectors": vectors, "chunks": DEFAULT_CHUNKS if groups % DEFAULT_CHUNKS == 0 else groups}


def _space(shape: Int8BSRShape) -> list[dict]:
    block_rows = shape.n // shape.block_rows
    return [
        {"group": g, "vectors": v, "chunks": c}
        for g in divisors_among(block_rows, (1, 2, 4, 8, 16))
        for v in divisors_among(shape.m // ROWS_PER_VECTOR, (8, 4, 2, 1))
        for c in sorted({block_rows // g, *divisors_among(block_rows // g, (2, 8))})
        if g * shape.block_rows * v <= 2 * MAX_ACCUMULATORS
    ]


def _build(workload: dict, knobs: dict | None) -> tirx.PrimFunc:
    activation_name, requantize, post_bias = epilogue_from_workload(workload)
    return u8s8_bsr_kernel(Int8BSRShape(**workload["shape"]), activation_name, requantize, knobs, post_bias)


def _tuning_key(workload: dict) -> dict:
    shape = Int8BSRShape(**workload["shape"])
    blocks = (shape.n // shape.block_rows) * (shape.k // GROUP)
    return {**bsr_shape_key(workload["shape"], blocks), "epilogue": epilogue_kind(workload)}


TUNABLE = [TunableFamily("u8s8_bsr", lambda w: _space(Int8BSRShape(**w["shape"])), _build, _tuning_key)]
