"""Integer dense layers: out[M, N] = act((x[M, K] . W[N, K] - zx * colsum(W)[n]) * scale[n] + bias[n])
with x uint8 (activations, zero point zx), W int8 (symmetric), int32 accumulation, and a float
dequantize epilogue (scale[n] = x scale * W scale of channel n), optionally requantized to the
next layer's uint8/int8 input on the way out.

Two instruction paths, chosen by the target:
- `vnni` (AVX-512 VNNI): vpdpbusd multiplies 4 consecutive u8 activations by 4 s8 weights of each
  of 16 output channels and adds the 4 products to 16 int32 lanes. Weights are packed
  [N/16, K/4, 16, 4] so one 64-byte load feeds one instruction; a tile of MR rows reuses it.
- `generic`: the same tile with widening int32 multiply-adds, vectorized by LLVM (no saturating
  16-bit intermediate, so any u8/s8 values are exact). K needs no padding here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .apply import mark_scheduled
from .epilogues import activation
from .tunable import TunableFamily, divisors_among, tag

LANES = 16  # int32 lanes of one 512-bit register: output channels per vpdpbusd
GROUP = 4  # reduction elements per vpdpbusd lane
ROW_TILE_CANDIDATES = (8, 4, 2, 1)
BLOCK_TILE_CANDIDATES = (2, 1)  # measured: 2 helps M=1 and the generic path; more gains nothing
MAX_ACCUMULATORS = 16  # of the 32 zmm registers; the rest hold weights and broadcasts


def vpdpbusd(acc, unsigned_bytes, signed_bytes):
    """acc (int32x16) plus, per lane, the dot product of 4 unsigned by 4 signed bytes. LLVM 22's
    intrinsic takes both byte operands as <64 x i8> (TVM's registered tensor intrinsic uses the
    old signature and fails verification)."""
    return T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), acc, unsigned_bytes, signed_bytes, dtype="int32x16"
    )


@dataclass(frozen=True)
class Requantize:
    """Quantize the output for the next integer layer instead of writing floats:
    out = saturate(round(y / scale) + zero_point), as QuantizeLinear does."""

    scale: float
    zero_point: int
    dtype: str  # "uint8" | "int8"

    @property
    def limits(self) -> tuple[float, float]:
        return (0.0, 255.0) if self.dtype == "uint8" else (-128.0, 127.0)

    def from_scaled(self, scaled):
        """saturate(round(scaled) + zero_point) for scaled = y / scale, as float32 (a TIR expression)."""
        low, high = self.limits
        return T.max(T.min(T.round(scaled) + T.float32(self.zero_point), T.float32(high)), T.float32(low))


@dataclass(frozen=True)
class Int8MatmulShape:
    m: int
    k: int
    n: int

    @property
    def padded_n(self) -> int:
        return -(-self.n // LANES) * LANES

    @property
    def padded_k(self) -> int:
        return -(-self.k // GROUP) * GROUP


@dataclass(frozen=True)
class PostBias:
    """A bias add after the layer's own output QuantizeLinear, as QDQ exports write it
    (matmul -> Q -> DQ -> + bias -> Q): the requantized value is dequantized, a second
    per-channel bias (the bias buffer's second half) added, and the sum quantized to `output`."""

    output: Requantize


@dataclass(frozen=True)
class OutputEpilogue:
    """The dequantized value's last steps: activation, then QuantizeLinear when requantizing,
    then the post-requantize bias add. Called on a float value (`epilogue(value, second_bias)`);
    `dtype="int32"` gives a quantized output as int32 instead of its byte type (for kernels that
    pack bytes)."""

    activation_name: str | None
    requantize: Requantize | None
    post_bias: PostBias | None = None

    def __call__(self, value, second_bias=None, dtype=None):
        value = activation(self.activation_name)(value)
        if self.requantize is None:
            return value
        quantized = _quantize(value, self.requantize)
        if self.post_bias is None:
            return T.Cast(dtype or self.requantize.dtype, quantized)
        value = (quantized - T.float32(self.requantize.zero_point)) * T.float32(self.requantize.scale) + second_bias
        return T.Cast(dtype or self.post_bias.output.dtype, _quantize(value, self.post_bias.output))

    @property
    def folds_into_channel_constants(self) -> bool:
        """Requantizing after no activation or ReLU: scale, bias, compensation and the quantize
        scales fold into one multiply-add per value (ReLU commutes with a positive scale)."""
        return self.requantize is not None and self.activation_name in (None, "relu")

    def channel_output(self, acc_value, channel, compensation, scale, bias, post_bias_offset: int, dtype=None):
        """One output channel's int32 sum to its output: zero-point compensation, scale and bias
        first; the post-requantize bias sits `post_bias_offset` on in the bias buffer."""
        if not self.folds_into_channel_constants:
            value = T.Cast("float32", acc_value - compensation[channel]) * scale[channel] + bias[channel]
            return self(value, bias[post_bias_offset + channel], dtype)
        # round(((acc - comp) * scale + bias) / s1) as round(acc * a + b) with per-channel scalars:
        # per vector of 16 values a conversion and one fma instead of a subtract, fma and divide
        # (the results may differ from the unfolded order by float rounding, within one step)
        first = self.requantize
        multiplier = scale[channel] * T.float32(1.0 / first.scale)
        offset = bias[channel] * T.float32(1.0 / first.scale) - T.Cast("float32", compensation[channel]) * multiplier
        scaled = T.Cast("float32", acc_value) * multiplier + offset
        if self.activation_name == "relu":
            scaled = T.max(scaled, T.float32(0))
        quantized = first.from_scaled(scaled)
        if self.post_bias is None:
            return T.Cast(dtype or first.dtype, quantized)
        second = self.post_bias.output
        ratio = T.float32(first.scale / second.scale)
        second_offset = bias[post_bias_offset + channel] * T.float32(1.0 / second.scale) - T.float32(first.zero_point * first.scale / second.scale)
        requantized = second.from_scaled(quantized * ratio + second_offset)
        return T.Cast(dtype or second.dtype, requantized)


def _quantize(value, params: Requantize):
    # a multiply by the reciprocal: a divide is ~5x the cost on AVX-512 (QuantizeLinear divides;
    # the two agree but for a value within an ulp of a rounding tie)
    return params.from_scaled(value * T.float32(1.0 / params.scale))


def epilogue_workload(activation_name: str | None, requantize: Requantize | None, post_bias: PostBias | None) -> dict:
    """The epilogue's part of a kernel's workload key (`post_bias` only when there is one, so
    the keys of existing tuning logs stay valid)."""
    workload = {"activation": activation_name, "requantize": asdict(requantize) if requantize else None}
    if post_bias is not None:
        workload["post_bias"] = asdict(post_bias)
    return workload


def epilogue_kind(workload: dict) -> dict:
    """What an epilogue does, without its constants: the part of a tuning key it makes up."""
    activation_name, requantize, post_bias = epilogue_from_workload(workload)
    return {"activation": activation_name, "requantize": requantize and requantize.dtype, "post_bias": post_bias and post_bias.output.dtype}


def epilogue_from_workload(workload: dict) -> tuple[str | None, Requantize | None, PostBias | None]:
    requantize = Requantize(**workload["requantize"]) if workload["requantize"] else None
    post_bias = PostBias(Requantize(**workload["post_bias"]["output"])) if workload.get("post_bias") else None
    return workload["activation"], requantize, post_bias


def output_dtype(requantize: Requantize | None, post_bias: PostBias | None) -> str:
    if post_bias is not None:
        return post_bias.output.dtype
    return requantize.dtype if requantize is not None else "float32"


def pack_weight(weight_nk: np.ndarray, vnni: bool) -> np.ndarray:
    """int8 [N, K], zero-padded, as the kernel reads it: [N/16, K/4, 16, 4] for vnni (one 64-byte
    vector per block and k group), else [K, N] (16 channels contiguous per k)."""
    n, k = weight_nk.shape
    shape = Int8MatmulShape(1, k, n)
    padded = np.zeros((shape.padded_n, shape.padded_k), np.int8)
    padded[:n, :k] = weight_nk
    if not vnni:
        return np.ascontiguousarray(padded[:, :k].T)
    return np.ascontiguousarray(padded.reshape(shape.padded_n // LANES, LANES, shape.padded_k // GROUP, GROUP).transpose(0, 2, 1, 3))


def _space(shape: Int8MatmulShape) -> list[dict]:
    """{"rows": MR, "blocks": NR}: MR rows x NR vectors of 16 channels per register tile."""
    blocks = shape.padded_n // LANES
    return [
        {"rows": r, "blocks": b}
        for r in divisors_among(shape.m, ROW_TILE_CANDIDATES)
        for b in divisors_among(blocks, (4, 2, 1))
        if r * b <= MAX_ACCUMULATORS
    ]


def _default_knobs(shape: Int8MatmulShape) -> dict:
    MR = next(t for t in ROW_TILE_CANDIDATES if shape.m % t == 0)
    # vector blocks of 16 channels per tile: the MR broadcast activations feed NR instructions each
    NR = next(t for t in BLOCK_TILE_CANDIDATES if (shape.padded_n // LANES) % t == 0 and MR * t <= MAX_ACCUMULATORS)
    return {"rows": MR, "blocks": NR}


def u8s8_matmul_kernel(
    shape: Int8MatmulShape,
    vnni: bool,
    activation_name: str | None = None,
    requantize: Requantize | None = None,
    knobs: dict | None = None,
    post_bias: PostBias | None = None,
) -> tirx.PrimFunc:
    """x u8 [M, K'] (K' = K padded to 4 for vnni), packed W, compensation i32 [N'], scale f32 [N'],
    bias f32 [N'] ([2 N'] with `post_bias`: its bias second) -> out [M, N], f32 or, with
    `requantize`, its integer dtype. N' = N padded to 16."""
    M, N = shape.m, shape.n
    K = shape.padded_k if vnni else shape.k
    NB, KG = shape.padded_n // LANES, shape.padded_k // GROUP
    knobs = knobs or _default_knobs(shape)
    MR, NR = knobs["rows"], knobs["blocks"]
    ragged_n = N % LANES != 0
    weight_shape = (NB, KG, LANES, GROUP) if vnni else (K, shape.padded_n)
    out_dtype = output_dtype(requantize, post_bias)
    finish = OutputEpilogue(activation_name, requantize, post_bias)
    bias_stages = 2 if post_bias is not None else 1

    def channel(nbo, lane):  # lane in [0, NR * 16) of the tile's channels
        return nbo * NR * LANES + lane

    @T.prim_func(private=True, s_tir=True)
    def kernel(
        x: T.Buffer((M, K), "uint8"),
        w: T.Buffer(weight_shape, "int8"),
        compensation: T.Buffer((shape.padded_n,), "int32"),
        scale: T.Buffer((shape.padded_n,), "float32"),
        bias: T.Buffer((bias_stages * shape.padded_n,), "float32"),
        out: T.Buffer((M, N), out_dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        for nbo in T.parallel(NB // NR):
            for mo in T.serial(M // MR):
                with T.sblock("int8_tile"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((MR, NR * LANES), "int32")
                    for r in T.unroll(MR):
                        for lane in T.vectorized(NR * LANES):
                            acc[r, lane] = 0
                    if vnni:
                        for kg in T.serial(KG):
                            for r in T.unroll(MR):
                                for b in T.unroll(NR):
                                    acc[r, T.ramp(b * LANES, 1, LANES)] = vpdpbusd(
                                        acc.vload([r, b * LANES], "int32x16"),
                                        T.reinterpret(T.broadcast(T.reinterpret(x.vload([mo * MR + r, kg * GROUP], "uint8x4"), dtype="int32"), LANES), dtype="int8x64"),
                                        w.vload([nbo * NR + b, kg, 0, 0], "int8x64"),
                                    )
                    else:
                        for kk in T.serial(K):
                            for r in T.unroll(MR):
                                for lane in T.vectorized(NR * LANES):
                                    acc[r, lane] = acc[r, lane] + T.Cast("int32", x[mo * MR + r, kk]) * T.Cast("int32", w[kk, channel(nbo, lane)])
                    for r in T.unroll(MR):
                        for lane in T.vectorized(NR * LANES):
                            if not ragged_n or channel(nbo, lane) < N:
                                out[mo * MR + r, channel(nbo, lane)] = finish.channel_output(
                                    acc[r, lane], channel(nbo, lane), compensation, scale, bias, (bias_stages - 1) * shape.padded_n
                                )

    family = "U8S8MatmulVNNI" if vnni else "U8S8Matmul"
    workload = {"shape": asdict(shape), "vnni": vnni, **epilogue_workload(activation_name, requantize, post_bias)}
    return tag(mark_scheduled(kernel, family), "u8s8_matmul", workload, knobs)


def _build(workload: dict, knobs: dict | None) -> tirx.PrimFunc:
    activation_name, requantize, post_bias = epilogue_from_workload(workload)
    return u8s8_matmul_kernel(Int8MatmulShape(**workload["shape"]), workload["vnni"], activation_name, requantize, knobs, post_bias)


def _tuning_key(workload: dict) -> dict:
    return {"shape": workload["shape"], "vnni": workload["vnni"], "epilogue": epilogue_kind(workload)}


TUNABLE = [TunableFamily("u8s8_matmul", lambda w: _space(Int8MatmulShape(**w["shape"])), _build, _tuning_key)]
