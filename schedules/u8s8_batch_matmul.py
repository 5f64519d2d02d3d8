"""Integer batched matmuls of two quantized activations (attention's QK^T and PV) on VNNI:
out[b, M, N] = epilogue(sa * sb * sum_k (a[b, m, k] - za) (b[b, k, n] - zb)), a and b uint8 or
int8 with per-tensor scales and zero points, the product requantized (or dequantized to float).

vpdpbusd multiplies unsigned by signed bytes: a is read as uint8 (int8 flipped by +128: x ^ 0x80,
zero point + 128) and b as int8 (uint8 flipped by -128: x ^ 0x80, zero point - 128). With those,
sum_k (a - za)(b - zb) = sum_k a b - zb rowsum_a[m] - za colsum_b[n] + K za zb, and the kernel
adds the two correction terms in its epilogue.

Per batch (one parallel task per head), b is packed once into [N/16, K/4, 16] words (one 64-byte
vector per block of 16 columns and k group: the 4 bytes of a k group of one column in one 32-bit
word; ~1/M of the work), its column sums come from vpdpbusd against ones and a's row sums from
widening adds; then MR x NR register tiles run the dense kernel's loop: one broadcast a word
feeds NR vpdpbusd. b arrives as [batch, N, K] ("nk": each word already whole, gathered 16 at a
time) or as it is, [batch, K, N] ("kn": four rows of 16 bytes interleaved by one byte shuffle),
whichever saves its producer a transpose (attention's PV: V's head split, 8.1 -> 1.7 us).

The tile is a tuning knob: the main loop runs at the vpdpbusd rate with any tile of 8 or more
accumulators, and which one spends least around it (packing, sums, epilogue) depends on the
shapes (BERT's heads: 4 x 4 by default; the tuned 4 x 2 and 2 x 4 tiles 13% and 6% faster on
QK^T and PV here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .tunable import TunableFamily, tag
from .u8s8_matmul import GROUP, LANES, MAX_ACCUMULATORS, OutputEpilogue, Requantize, output_dtype, vpdpbusd

ROW_SUM_LANES = 16  # bytes of a row summed per widening add
FLIP = 0x80808080  # x ^ 0x80 in each byte of a word: uint8 <-> int8 with an offset of 128


@dataclass(frozen=True)
class Int8BatchMatmulShape:
    batch: int
    m: int
    k: int
    n: int


@dataclass(frozen=True)
class QuantizedOperand:
    dtype: str  # "uint8" | "int8"
    scale: float
    zero_point: int  # in the operand's own dtype


def supports_int8_batch_matmul(shape: Int8BatchMatmulShape) -> bool:
    """Whole 16-column blocks, whole k groups and whole 16-byte row chunks."""
    return shape.n % LANES == 0 and shape.k % ROW_SUM_LANES == 0


def _tiles(shape: Int8BatchMatmulShape, blocks_per_tile=(8, 4, 2, 1)) -> list[tuple[int, int]]:
    """(MR rows, NR blocks of 16 columns) register tiles that divide the output and fit the
    accumulators."""
    blocks = shape.n // LANES
    return [(rows, nr) for rows in (8, 4, 2, 1) if shape.m % rows == 0 for nr in blocks_per_tile if blocks % nr == 0 and rows * nr <= MAX_ACCUMULATORS]


def _default_knobs(shape: Int8BatchMatmulShape) -> dict:
    """The most accumulators, then the widest rows of them."""
    rows, nr = max(_tiles(shape, (4, 2, 1)), key=lambda tile: (tile[0] * tile[1], tile[1]))
    return {"rows": rows, "blocks": nr}


def u8s8_batch_matmul_kernel(
    shape: Int8BatchMatmulShape,
    a: QuantizedOperand,
    b: QuantizedOperand,
    requantize: Requantize | None,
    knobs: dict | None = None,
    rhs_layout: str = "nk",
) -> tirx.PrimFunc:
    """a [batch, M, K], b [batch, N, K] ("nk") or [batch, K, N] ("kn") -> out [batch, M, N]:
    requantize's dtype, or float32 when None. Knobs: {"rows": MR, "blocks": NR} (the register
    tile)."""
    batch, M, K, N = shape.batch, shape.m, shape.k, shape.n
    KG, NB = K // GROUP, N // LANES
    knobs = knobs or _default_knobs(shape)
    MR, NR = knobs["rows"], knobs["blocks"]
    flip_a = FLIP if a.dtype == "int8" else 0
    flip_b = FLIP if b.dtype == "uint8" else 0
    a_offset = 128 if a.dtype == "int8" else 0
    za = a.zero_point + a_offset  # of a as uint8
    zb = b.zero_point - (128 if b.dtype == "uint8" else 0)  # of b as int8
    scale = a.scale * b.scale
    out_dtype = output_dtype(requantize, None)
    finish = OutputEpilogue(None, requantize)
    ones = 0x01010101  # four int8 (or uint8) ones

    def words_as_bytes(words):
        return T.reinterpret(words, dtype="int8x64")

    def interleaved_rows(rhs, h, kg, nb):  # [4 k, 16 columns] bytes -> 16 words of 4 k bytes
        rows = [rhs.vload([h, kg * GROUP + q, nb * LANES], f"{b.dtype}x{LANES}") for q in range(GROUP)]
        return tirx.Shuffle(rows, [(j % GROUP) * LANES + j // GROUP for j in range(GROUP * LANES)])

    rhs_shape = (batch, N, K) if rhs_layout == "nk" else (batch, K, N)
    flip_byte = T.broadcast(tirx.const(0x80 if b.dtype == "uint8" else 0, b.dtype), GROUP * LANES)

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        lhs: T.Buffer((batch, M, K), a.dtype),
        rhs: T.Buffer(rhs_shape, b.dtype),
        out: T.Buffer((batch, M, N), out_dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        lhs_words = T.decl_buffer((batch, M, KG), "uint32", data=lhs.data)
        rhs_words = T.decl_buffer((batch, N, KG), "uint32", data=rhs.data)  # "nk"
        for h in T.parallel(batch):
            with T.sblock("int8_batch"):
                T.reads()
                T.writes()
                packed = T.sblock_alloc_buffer((NB, KG, LANES), "uint32")
                row_terms = T.sblock_alloc_buffer((M,), "int32")  # -zb rowsum_a + K za zb
                column_terms = T.sblock_alloc_buffer((N,), "int32")  # -za colsum_b
                partial = T.sblock_alloc_buffer((ROW_SUM_LANES,), "int32")
                acc = T.sblock_alloc_buffer((MR, NR * LANES), "int32")
                packed_bytes = T.decl_buffer((NB, KG, GROUP * LANES), b.dtype, data=packed.data)
                for nb in T.serial(NB):
                    for kg in T.serial(KG):
                        if rhs_layout == "nk":
                            for lane in T.vectorized(LANES):
                                packed[nb, kg, lane] = rhs_words[h, nb * LANES + lane, kg] ^ T.uint32(flip_b)
                        else:
                            packed_bytes[nb, kg, T.ramp(0, 1, GROUP * LANES)] = interleaved_rows(rhs, h, kg, nb) ^ flip_byte
                    for lane in T.vectorized(LANES):
                        acc[0, lane] = 0
                    for kg in T.serial(KG):
                        acc[0, T.ramp(0, 1, LANES)] = vpdpbusd(
                            acc.vload([0, 0], "int32x16"), words_as_bytes(T.broadcast(T.uint32(ones), LANES)), words_as_bytes(packed.vload([nb, kg, 0], "uint32x16"))
                        )
                    for lane in T.vectorized(LANES):
                        column_terms[nb * LANES + lane] = acc[0, lane] * T.int32(-za)
                for m in T.serial(M):
                    for lane in T.vectorized(ROW_SUM_LANES):
                        partial[lane] = 0
                    for chunk in T.serial(K // ROW_SUM_LANES):
                        for lane in T.vectorized(ROW_SUM_LANES):
                            partial[lane] = partial[lane] + T.Cast("int32", lhs[h, m, chunk * ROW_SUM_LANES + lane]) + T.int32(a_offset)
                    row_terms[m] = T.int32(K * za * zb)
                    for lane in T.serial(ROW_SUM_LANES):
                        row_terms[m] = row_terms[m] - T.int32(zb) * partial[lane]
                for mo in T.serial(M // MR):
                    for nbo in T.serial(NB // NR):
                        for r in T.unroll(MR):
                            for lane in T.vectorized(NR * LANES):
                                acc[r, lane] = 0
                        for kg in T.serial(KG):
                            for r in T.unroll(MR):
                                for blk in T.unroll(NR):
                                    acc[r, T.ramp(blk * LANES, 1, LANES)] = vpdpbusd(
                                        acc.vload([r, blk * LANES], "int32x16"),
                                        words_as_bytes(T.broadcast(lhs_words[h, mo * MR + r, kg] ^ T.uint32(flip_a), LANES)),
                                        words_as_bytes(packed.vload([nbo * NR + blk, kg, 0], "uint32x16")),
                                    )
                        for r in T.unroll(MR):
                            for lane in T.vectorized(NR * LANES):
                                out[h, mo * MR + r, nbo * NR * LANES + lane] = finish(
                                    T.Cast("float32", acc[r, lane] + row_terms[mo * MR + r] + column_terms[nbo * NR * LANES + lane]) * T.float32(scale)
                                )

    workload = {"shape": asdict(shape), "a": asdict(a), "b": asdict(b), "requantize": asdict(requantize) if requantize else None}
    if rhs_layout != "nk":  # only then, so the keys of the logs written before "kn" stay valid
        workload["rhs_layout"] = rhs_layout
    return tag(mark_scheduled(kernel, "U8S8BatchMatmulVNNI"), "u8s8_batch_matmul", workload, knobs)


def _build(workload: dict, knobs: dict | None) -> tirx.PrimFunc:
    requantize = Requantize(**workload["requantize"]) if workload["requantize"] else None
    operands = (QuantizedOperand(**workload[name]) for name in ("a", "b"))
    return u8s8_batch_matmul_kernel(Int8BatchMatmulShape(**workload["shape"]), *operands, requantize, knobs, workload.get("rhs_layout", "nk"))


def _tuning_key(workload: dict) -> dict:
    """Shapes and dtypes: not the scales and zero points, which differ from head to head."""
    requantize = workload["requantize"]
    key = {"shape": workload["shape"], "a": workload["a"]["dtype"], "b": workload["b"]["dtype"], "requantize": requantize and requantize["dtype"]}
    return key | ({"rhs_layout": workload["rhs_layout"]} if "rhs_layout" in workload else {})


def _space(workload: dict) -> list[dict]:
    return [{"rows": rows, "blocks": nr} for rows, nr in _tiles(Int8BatchMatmulShape(**workload["shape"]))]


TUNABLE = [TunableFamily("u8s8_batch_matmul", _space, _build, _tuning_key)]
