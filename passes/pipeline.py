"""The pass pipeline between the ONNX import and TVM's build.

TVM's default CPU build only legalizes and lowers; this pipeline adds what an inference compiler
needs: layout ops moved onto quantized bytes, element-wise chains between quantized tensors
turned into lookup tables, quantized softmax on bytes, QDQ layers (and
matmuls of two quantized activations) rewritten into integer kernels, sparse layers rewritten into BSR kernels, fast vectorizable math for exp/erf/tanh, constant folding (weights are transposed once, at
compile time), fusion of element-wise epilogues into their producers, dead-code removal, and a
default schedule for every kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.target import Target
from tvm.target.codegen import llvm_cpu_has_features

from sparsec.schedules import default_schedule_pass

from .dense_to_bsr import BSROptions, DenseToBSR
from .mark_constant_params import MarkConstantParams
from .qdq_batch_matmul import QDQBatchMatmulToInt8
from .qdq_layout_fold import QDQLayoutFold
from .qdq_lut import QDQElementwiseToLUT
from .qdq_softmax import QDQSoftmaxToInt8
from .qdq_to_int8 import QDQToInt8
from .repack_constants import RepackConstants


def cpu_has(target: Target, feature: str) -> bool:
    """Whether the target CPU has an LLVM feature (its -mcpu's, or a +feature of -mattr)."""
    return bool(llvm_cpu_has_features([feature], target))


def has_vnni(target: Target) -> bool:
    return cpu_has(target, "avx512vnni")


def optimization_pipeline(
    target: Target,
    sparse: DenseToBSR | None = None,
    quantized: QDQToInt8 | None = None,
    tuned: tvm.transform.Pass | None = None,
    schedule: bool = True,
) -> tvm.transform.Pass:
    """`sparse`, `quantized`: the DenseToBSR and QDQToInt8 passes to run first (their
    `decisions` report each layer); default options when None. `tuned`: the pass that applies a
    tuning log's records, before the default schedules. `schedule=False` stops before any
    scheduling (what `sparsec tune` extracts its tasks from)."""
    scheduling = [tuned] if tuned is not None else []
    if schedule:
        scheduling = [
            # marks the parameters bound to constants: a schedule may repack them (f32_matmul)
            MarkConstantParams(),
            *scheduling,
            default_schedule_pass(target),
            RepackConstants(),
        ]
    return tvm.transform.Sequential(
        [
            QDQLayoutFold(),
            # before QDQToInt8: a chain's table output is the next layer's quantized input
            QDQElementwiseToLUT(vbmi=cpu_has(target, "avx512vbmi")),
            *([QDQSoftmaxToInt8()] if cpu_has(target, "avx512f") else []),  # its table reads are 512-bit vpermps
            quantized if quantized is not None else QDQToInt8(vnni=has_vnni(target)),
            *([QDQBatchMatmulToInt8()] if has_vnni(target) else []),
            sparse if sparse is not None else DenseToBSR(BSROptions()),
            # exp/erf/tanh as polynomials LLVM can vectorize (libm calls would be scalar).
            relax.transform.FastMathTransform(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
            *scheduling,
        ],
        name="sparsec.optimization_pipeline",
    )
