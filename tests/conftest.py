import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sparsec  # noqa: E402

# Tests compile for the machine they run on.
TARGET = "native"


@pytest.fixture
def compile_onnx(tmp_path):
    """Compile an in-memory ONNX model; returns (loaded artifact, CompileResult)."""

    def _compile(model: onnx.ModelProto, name: str = "model", **kwargs):
        source = tmp_path / f"{name}.onnx"
        onnx.save(model, str(source))
        result = sparsec.compile(source, tmp_path / f"{name}.so", target=kwargs.pop("target", TARGET), **kwargs)
        return sparsec.load(result.output), result

    return _compile


def random_feeds(model, seed: int = 0, vocab: int = 100) -> dict[str, np.ndarray]:
    """Random inputs for a compiled model's metadata: normal floats, ids in [0, vocab)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in model.inputs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            feeds[spec.name] = rng.integers(0, vocab, spec.shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return feeds


def assert_close_relative(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    """Max error relative to the largest magnitude of the reference."""
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = float(np.abs(actual - expected).max()) / scale
    assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "sparsec.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
