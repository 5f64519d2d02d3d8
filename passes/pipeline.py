"""The pass pipeline between the ONNX import and TVM's build.

TVM's default CPU build only legalizes and lowers; this pipeline adds what an inference compiler
needs: sparse layers rewritten into BSR kernels, fast vectorizable math for exp/erf/tanh, constant folding (weights are transposed once, at
compile time), fusion of element-wise epilogues into their producers, dead-code removal, and a
default schedule for every kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.target import Target

from sparsec.schedules import default_schedule_pass

from .dense_to_bsr import BSROptions, DenseToBSR


def optimization_pipeline(target: Target, sparse: DenseToBSR | None = None) -> tvm.transform.Pass:
    """`sparse`: the DenseToBSR pass to run first (its `decisions` report each layer); default
    options when None."""
    return tvm.transform.Sequential(
        [
            sparse if sparse is not None else DenseToBSR(BSROptions()),
            # exp/erf/tanh as polynomials LLVM can vectorize (libm calls would be scalar).
            relax.transform.FastMathTransform(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
            default_schedule_pass(target),
        ],
        name="sparsec.optimization_pipeline",
    )
