"""Post-training quantization (`compile --quantize int8 --calibration-data`): the QDQ model runs on
the integer kernels, stays close to fp32, reports each layer's error, honours --exclude, and
bad calibration input is one clear error."""

import numpy as np
import onnx
import pytest
from conftest import TARGET, run_cli

import sparsec
from sparsec import models


@pytest.fixture
def fp32_mlp(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(models.mlp((64, 128, 96, 16), batch=4), str(path))
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, input=np.random.default_rng(0).standard_normal((16, 4, 64)).astype(np.float32))
    return path, calibration


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_quantized_mlp_runs_int8_close_to_fp32(tmp_path, fp32_mlp, method):
    path, calibration = fp32_mlp
    fp32 = sparsec.load(sparsec.compile(path, tmp_path / "fp32.so", target=TARGET).output)
    result = sparsec.compile(path, tmp_path / "int8.so", target=TARGET, quantize="int8", calibration_data=calibration, calibration_method=method)
    assert [d.path for d in result.int8_layers] == ["vnni"] * 3
    assert [e.node for e in result.quantization_errors] == ["fc0", "fc1", "fc2"]
    assert all(0 < e.relative_error < 0.05 for e in result.quantization_errors)
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    expected = fp32.run(None, {"input": x})[0]
    got = sparsec.load(result.output).run(None, {"input": x})[0]
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.05


def test_excluded_layers_stay_fp32(tmp_path, fp32_mlp):
    path, calibration = fp32_mlp
    result = sparsec.compile(path, tmp_path / "int8.so", target=TARGET, quantize="int8", calibration_data=calibration, exclude=["fc2"])
    assert len(result.int8_layers) == 2 and [e.node for e in result.quantization_errors] == ["fc0", "fc1"]
    assert [d.n for d in result.layers] == [16]  # fc2 compiled as an fp32 layer


def test_calibration_errors_are_one_line(tmp_path, fp32_mlp):
    path, calibration = fp32_mlp
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, tokens=np.zeros((2, 4, 64), np.float32))
    cases = [
        (["--quantize", "int8", "--calibration-data", str(wrong)], "no array for input(s) input"),
        (["--calibration-data", str(calibration)], "only apply with --quantize int8"),
        (["--quantize", "int8", "--calibration-data", str(calibration), "--exclude", "fc9"], "--exclude fc9: no node of that name"),
    ]
    for flags, message in cases:
        done = run_cli("compile", str(path), "-o", str(tmp_path / "x.so"), "--target", TARGET, *flags)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "x.so").exists()
