"""Regenerate the bundled example: an MLP (Gemm layers) pruned 90% in blocks of 4 output
channels, and one input for it.

    python examples/make_example.py
"""

from pathlib import Path

import numpy as np
import onnx

from sparsec import models

HERE = Path(__file__).parent

if __name__ == "__main__":
    model = models.prune(models.mlp((256, 512, 256, 10), batch=1, form="gemm", seed=0), 0.9, block=(4, 1))
    onnx.save(model, str(HERE / "mlp.onnx"))
    np.save(HERE / "mlp_input.npy", np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32))
