"""The command line: compile, inspect and run, and exit code 2 with a one-line message (never a
traceback) for every bad input."""

import json

import numpy as np
import onnx
import pytest
from conftest import TARGET, assert_close_relative, run_cli
from onnx_zoo import onnxruntime_outputs

import sparsec
from sparsec import models

MLP = models.prune(models.mlp((32, 64, 10), batch=2), 0.8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    onnx.save(MLP, str(directory / "mlp.onnx"))
    onnx.save(models.mlp((8, 4), batch="batch"), str(directory / "dynamic.onnx"))
    np.save(directory / "x.npy", np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32))
    done = run_cli("compile", "mlp.onnx", "-o", "mlp.so", "--target", TARGET, cwd=directory)
    assert done.returncode == 0, done.stderr
    return directory


def test_compile_reports_progress_and_writes_the_artifact(workdir):
    done = run_cli("compile", "mlp.onnx", "-o", "again.so", "--target", "llvm -mcpu=skylake-avx512", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "loading mlp.onnx" in done.stderr and "generating code" in done.stderr
    assert "wrote again.so" in done.stderr and "skylake-avx512" in done.stderr
    assert (workdir / "again.so").is_file()
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp.so")]


def test_run_prints_or_saves_outputs(workdir):
    printed = run_cli("run", "mlp.so", "--input", "input=x.npy", cwd=workdir)
    assert printed.returncode == 0, printed.stderr
    assert f"{MLP.graph.output[0].name}: float32 (2, 10)" in printed.stdout
    saved = run_cli("run", "mlp.so", "--input", "input=x.npy", "-o", "y.npz", cwd=workdir)
    assert saved.returncode == 0, saved.stderr
    result = np.load(workdir / "y.npz")[MLP.graph.output[0].name]
    assert_close_relative(result, onnxruntime_outputs(MLP, {"input": np.load(workdir / "x.npy")})[0])


def test_inspect_table_and_json(workdir):
    table = run_cli("inspect", "mlp.onnx", cwd=workdir)
    assert table.returncode == 0, table.stderr
    assert "fc0" in table.stdout and "64x32" in table.stdout and "80.0%" in table.stdout
    as_json = run_cli("inspect", "mlp.onnx", "--json", cwd=workdir)
    layers = json.loads(as_json.stdout)["layers"]
    assert [layer["name"] for layer in layers] == ["fc0", "fc1"]
    assert set(layers[0]) == {"name", "op", "weight", "weight_shape", "sparsity", "macs", "kernel", "estimated_speedup"}
    assert layers[0]["macs"] == 2 * 32 * 64 and abs(layers[0]["sparsity"] - 0.8) < 1e-3
    dynamic = json.loads(run_cli("inspect", "dynamic.onnx", "--json", cwd=workdir).stdout)["layers"]
    assert dynamic[0]["macs"] is None  # unknown batch: no MAC count, but no error either


def test_help_explains_the_flags():
    done = run_cli("compile", "--help")
    assert done.returncode == 0
    for flag in ("--target", "--input-shape", "native", "atomically"):
        assert flag in done.stdout


@pytest.fixture(scope="module")
def bad_inputs(workdir):
    (workdir / "garbage.onnx").write_bytes(b"\x08\x01\x12\x00definitely not onnx" * 3)
    (workdir / "fake.so").write_bytes(b"\x7fELF nope")
    np.save(workdir / "x64.npy", np.zeros((2, 32), np.float64))
    np.save(workdir / "xf.npy", np.asfortranarray(np.zeros((2, 32), np.float32)))
    np.save(workdir / "short.npy", np.zeros((1, 32), np.float32))
    return workdir


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["compile", "absent.onnx"], "absent.onnx: no such file"),
        (["compile", "garbage.onnx"], "garbage.onnx: not a readable ONNX model"),
        (["compile", "mlp.onnx", "--target", "llvm -mcpu=pentium9"], "unknown CPU 'pentium9' for -mcpu"),
        (["compile", "mlp.onnx", "--target", "cuda"], "only CPU targets"),
        (["compile", "dynamic.onnx"], "--input-shape input=Nx8"),
        (["compile", "dynamic.onnx", "--input-shape", "input=2by8"], "expected NAME=DIMxDIMx"),
        (["compile", "dynamic.onnx", "--input-shape", "x=2x8"], "the model has no input 'x'"),
        (["run", "absent.so"], "absent.so: no such file"),
        (["run", "fake.so"], "not a sparsec artifact"),
        (["run", "mlp.so"], "missing input 'input'"),
        (["run", "mlp.so", "--input", "input"], "expected NAME=FILE.npy"),
        (["run", "mlp.so", "--input", "input=absent.npy"], "cannot read absent.npy"),
        (["run", "mlp.so", "--input", "input=x64.npy"], "expected dtype float32, got float64"),
        (["run", "mlp.so", "--input", "input=short.npy"], "expected shape (2, 32), got (1, 32)"),
        (["run", "mlp.so", "--input", "input=xf.npy"], "not C-contiguous"),
        (["run", "mlp.so", "--input", "input=x.npy", "--input", "extra=x.npy"], "unknown input(s) extra"),
        (["inspect", "absent.onnx"], "absent.onnx: no such file"),
        (["compile", "mlp.onnx", "--block", "4by1"], "--block '4by1': expected RxC"),
    ],
)
def test_bad_input_exits_2_with_one_line(bad_inputs, args, fragment):
    done = run_cli(*args, cwd=bad_inputs)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and fragment in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in lines if line.startswith("error: ")]) == 1
    assert not [p for p in bad_inputs.iterdir() if p.name.endswith(".tmp.so")]


def test_ctrl_c_during_compile_leaves_no_artifact_and_no_traceback(tmp_path):
    import signal
    import subprocess
    import sys

    onnx.save(models.transformer_encoder(models.EncoderConfig(layers=4, hidden=256, heads=4, ffn=1024, vocab=1000), seq=64), str(tmp_path / "enc.onnx"))
    child = subprocess.Popen(
        [sys.executable, "-m", "sparsec.cli", "compile", "enc.onnx", "-o", "enc.so", "--target", TARGET],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    for line in child.stderr:  # interrupt once the compile is under way (seconds of work remain)
        if "importing to Relax" in line:
            break
    child.send_signal(signal.SIGINT)
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.onnx"]


def test_an_interrupt_that_tvm_swallowed_still_stops_the_compile(tmp_path, monkeypatch):
    # TVM turns a KeyboardInterrupt raised in a Python pass into a RuntimeError, which a
    # schedule rule's fallback may catch: the flag stops the compile at its next stage anyway.
    from sparsec import interrupts

    onnx.save(models.mlp((16, 8), batch=1), str(tmp_path / "m.onnx"))
    monkeypatch.setattr(interrupts, "_interrupted", True)
    with pytest.raises(KeyboardInterrupt):
        sparsec.compile(tmp_path / "m.onnx", tmp_path / "m.so", target=TARGET)
    assert not (tmp_path / "m.so").exists()
