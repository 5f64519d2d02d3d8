"""The slim loader: metadata, feeds checking, alignment, and no compiler in the process."""

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from conftest import TARGET, assert_close_relative
from onnx_zoo import onnxruntime_outputs

import sparsec
from sparsec import models
from sparsec.errors import ArtifactError, FeedError
from sparsec.runtime.export import export_atomically

MLP = models.mlp((32, 64, 10), batch=3)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("artifact")
    onnx.save(MLP, str(directory / "mlp.onnx"))
    return sparsec.compile(directory / "mlp.onnx", directory / "mlp.so", target=TARGET).output


@pytest.fixture(scope="module")
def model(artifact):
    return sparsec.runtime.load(artifact)


def _x(dtype=np.float32):
    return np.random.default_rng(0).standard_normal((3, 32)).astype(dtype)


def test_metadata_travels_inside_the_artifact(model):
    assert [(i.name, i.shape, i.dtype) for i in model.inputs] == [("input", (3, 32), "float32")]
    assert [(o.shape, o.dtype) for o in model.outputs] == [((3, 10), "float32")]
    assert model.outputs[0].name == MLP.graph.output[0].name
    assert model.metadata.target["kind"] == "llvm"


def test_misaligned_feeds_are_realigned(tmp_path):
    """TVM's kernels use aligned vector loads: an int64 id array 8 bytes off a 64-byte boundary
    crashed the process before the loader realigned feeds (run in a child so a crash fails)."""
    config = models.EncoderConfig(layers=1, hidden=32, heads=2, ffn=64, vocab=50, max_positions=16)
    encoder = models.transformer_encoder(config, seq=16)
    onnx.save(encoder, str(tmp_path / "encoder.onnx"))
    artifact = sparsec.compile(tmp_path / "encoder.onnx", tmp_path / "encoder.so", target=TARGET).output
    ids = np.random.default_rng(0).integers(0, config.vocab, (1, 16)).astype(np.int64)
    script = textwrap.dedent(
        f"""
        import numpy as np
        import sparsec.runtime
        model = sparsec.runtime.load({str(artifact)!r})
        ids = np.array({ids.tolist()!r}, dtype=np.int64)
        outputs = []
        for offset in range(8):
            storage = np.empty(ids.size + 8, np.int64)
            shifted = storage[offset : offset + ids.size].reshape(ids.shape)
            shifted[...] = ids
            outputs.append(model.run(None, {{"input_ids": shifted}})[0])
        np.save({str(tmp_path / "out.npy")!r}, np.stack(outputs))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = onnxruntime_outputs(encoder, {"input_ids": ids})[0]
    for output in np.load(tmp_path / "out.npy"):
        assert_close_relative(output, expected)


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, "missing input 'input': expected float32 array of shape (3, 32)"),
        ({"input": _x(), "mask": _x()}, "unknown input(s) mask; the model takes input"),
        ({"input": _x()[:2]}, "input 'input': expected shape (3, 32), got (2, 32)"),
        ({"input": _x(np.float64)}, "input 'input': expected dtype float32, got float64"),
        ({"input": np.asfortranarray(_x())}, "input 'input': the array is not C-contiguous"),
        ({"input": [[0.0] * 32] * 3}, "input 'input': expected a numpy array, got list"),
    ],
)
def test_bad_feeds_name_the_input(model, feeds, message):
    with pytest.raises(FeedError) as err:
        model.run(None, feeds)
    assert message in str(err.value)


def test_unknown_output_name(model):
    with pytest.raises(FeedError, match="unknown output"):
        model.run(["nope"], {"input": _x()})


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        sparsec.runtime.load(tmp_path / "absent.so")
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"\x7fELF garbage")
    with pytest.raises(ArtifactError, match="not a sparsec artifact"):
        sparsec.runtime.load(fake)


def test_fresh_process_runs_without_the_compiler(artifact, tmp_path):
    np.save(tmp_path / "x.npy", _x())
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import sparsec.runtime
        model = sparsec.runtime.load({str(artifact)!r})
        (y,) = model.run(None, {{"input": np.load({str(tmp_path / "x.npy")!r})}})
        np.save({str(tmp_path / "y.npy")!r}, y)
        maps = open("/proc/self/maps").read()
        assert "libtvm_compiler" not in maps, "TVM's compiler library was loaded"
        assert "libtvm_runtime" in maps
        loaded = sorted(m for m in sys.modules if m == "tvm" or m.startswith("tvm."))
        assert not loaded, loaded
        print("slim ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "slim ok" in done.stdout
    assert_close_relative(np.load(tmp_path / "y.npy"), onnxruntime_outputs(MLP, {"input": _x()})[0])


class _FailingExecutable:
    """Writes half an artifact, then is interrupted."""

    def __init__(self, error):
        self.error = error

    def export_library(self, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("linker failed")])
def test_interrupted_export_leaves_nothing(tmp_path, error):
    with pytest.raises(type(error)):
        export_atomically(_FailingExecutable(error), tmp_path / "out.so")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_previous_artifact(tmp_path):
    previous = tmp_path / "out.so"
    previous.write_bytes(b"previous artifact")
    with pytest.raises(RuntimeError):
        export_atomically(_FailingExecutable(RuntimeError("boom")), previous)
    assert previous.read_bytes() == b"previous artifact"
    assert list(tmp_path.iterdir()) == [previous]


def test_outputs_of_earlier_runs_are_not_overwritten(model):
    first = model.run(None, {"input": _x()})[0]
    kept = first.copy()
    model.run(None, {"input": -_x()})
    np.testing.assert_array_equal(first, kept)


def test_thread_count_is_fixed_per_process(model):
    with pytest.warns(UserWarning, match="thread pool runs"):
        sparsec.runtime.load(model.path, num_threads=model.num_threads + 1)


def test_token_ids_outside_the_embedding_are_rejected(tmp_path, capfd):
    config = models.EncoderConfig(layers=1, hidden=32, heads=2, ffn=64, vocab=50, max_positions=16)
    source = models.transformer_encoder(config, seq=8)
    onnx.save(source, str(tmp_path / "encoder.onnx"))
    encoder = sparsec.runtime.load(sparsec.compile(tmp_path / "encoder.onnx", tmp_path / "encoder.so", target=TARGET).output)
    # the gathers clamp their indices: TVM's unchecked "fast" take warned on every compile
    assert "out-of-bounds" not in capfd.readouterr().err
    assert encoder.inputs[0].value_range == (-50, 50)
    ids = np.arange(8, dtype=np.int64).reshape(1, 8)
    negative = {"input_ids": ids - 50}  # negative ids count from the end, as in ONNX
    assert_close_relative(encoder.run(None, negative)[0], onnxruntime_outputs(source, negative)[0])
    with pytest.raises(FeedError, match=r"input 'input_ids': values must be in \[-50, 50\), got 0\.\.1000000"):
        encoder.run(None, {"input_ids": np.where(ids == 7, 1_000_000, ids)})
