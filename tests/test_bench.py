"""`sparsec bench`: figures present, a stable JSON schema, and a wrong output detected.
Speed itself is measured by benchmarks/, not here."""

import json

import numpy as np
import onnx
import pytest
from conftest import TARGET, run_cli

from sparsec import models
from sparsec.bench.engines import is_available
from sparsec.bench.stats import compare_outputs, summarize

QUICK = ["--seconds", "0.2", "--rounds", "2", "--warmup", "1", "--threads", "1"]
LATENCY_KEYS = {"mean", "median", "p90", "p99"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bench")
    onnx.save(models.mlp((16, 32, 4), batch="batch", seed=0), str(directory / "mlp.onnx"))
    onnx.save(models.mlp((16, 32, 4), batch=2, seed=1), str(directory / "other.onnx"))
    config = models.EncoderConfig(layers=1, hidden=32, heads=2, ffn=64, vocab=50, max_positions=16)
    onnx.save(models.transformer_encoder(config, seq=8), str(directory / "encoder.onnx"))
    models.quantize_qdq(directory / "encoder.onnx", directory / "encoder_int8.onnx")
    return directory


def test_json_schema_and_figures(workdir):
    done = run_cli("bench", "mlp.onnx", "--batch", "2", "--target", TARGET, "--compare", "onnxruntime", "--json", "-", *QUICK, cwd=workdir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"schema", "model", "batch", "threads", "seconds_per_round", "rounds", "machine", "versions", "engines", "comparisons"}
    assert report["schema"] == "sparsec-bench/1" and report["batch"] == 2 and report["rounds"] == 2
    assert set(report["engines"]) == {"sparsec", "onnxruntime"}
    for stats in report["engines"].values():
        assert set(stats) == {"runs", "throughput_items_per_s", "latency_ms", "round_median_ms"}
        assert set(stats["latency_ms"]) == LATENCY_KEYS and set(stats["round_median_ms"]) == {"min", "median", "max"}
        assert stats["runs"] >= 6 and stats["throughput_items_per_s"] > 0
        assert stats["latency_ms"]["median"] <= stats["latency_ms"]["p99"]
    comparison = report["comparisons"]["onnxruntime"]
    assert comparison["outputs_agree"] and comparison["max_relative_error"] < 1e-4 and comparison["speedup"] > 0
    assert {"cpu", "cores", "isa"} <= set(report["machine"]) and "apache-tvm" in report["versions"]


def test_text_report_and_token_ids_in_range(workdir):
    done = run_cli("bench", "encoder.onnx", "--target", TARGET, "--compare", "onnxruntime", *QUICK, cwd=workdir)
    assert done.returncode == 0, done.stderr  # ids beyond the 50-row embedding would crash or disagree
    assert "items/s" in done.stdout and "p99" in done.stdout
    assert "outputs agree with onnxruntime" in done.stdout


def test_wrong_output_is_detected(workdir):
    compiled = run_cli("compile", "mlp.onnx", "--input-shape", "input=2x16", "-o", "mlp.so", "--target", TARGET, "-q", cwd=workdir)
    assert compiled.returncode == 0, compiled.stderr
    done = run_cli("bench", "mlp.so", "--onnx", "other.onnx", "--compare", "onnxruntime", *QUICK, cwd=workdir)
    assert done.returncode == 1
    assert "OUTPUTS DISAGREE with onnxruntime" in done.stdout


def test_given_inputs_are_used(workdir):
    np.save(workdir / "x.npy", np.ones((2, 16), np.float32))
    done = run_cli("bench", "mlp.so", "--input", "input=x.npy", "--json", "-", *QUICK, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["engines"]) == {"sparsec"}


def test_another_artifact_is_a_peer(workdir):
    """Two builds of one model (dense and forced-sparse here; tuned and untuned in practice),
    timed alternately, their outputs compared."""
    sparse = run_cli("compile", "mlp.onnx", "--input-shape", "input=2x16", "-o", "sparse.so", "--target", TARGET, "--sparsity-threshold", "0", "-q", cwd=workdir)
    assert sparse.returncode == 0, sparse.stderr
    done = run_cli("bench", "mlp.so", "--compare", "sparse.so", "--json", "-", *QUICK, cwd=workdir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["engines"]) == {"sparsec", "sparse.so"} and report["engines"]["sparse.so"]["runs"] >= 6
    assert report["comparisons"]["sparse.so"]["outputs_agree"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["bench", "mlp.so", "--compare", "onnxruntime"], "--compare needs the ONNX model"),
        (["bench", "mlp.onnx", "--compare", "tensorrt"], "--compare tensorrt: unknown engine"),
        (["bench", "mlp.so", "--compare", "absent.so"], "--compare absent.so: no such file"),
        (["bench", "mlp.so", "--compare", "mlp.so", "--compare", "mlp.so"], "a peer is named twice"),
        (["bench", "mlp.so", "--batch", "4"], "--batch and --input-shape apply when compiling"),
        (["bench", "other.onnx", "--batch", "4"], "batch fixed at 2"),
        (["bench", "absent.onnx"], "absent.onnx: no such file"),
        (["bench", "mlp.so", "--input", "nope=x.npy"], "the model has no such input"),
    ],
)
def test_bad_bench_input_exits_2(workdir, args, fragment):
    done = run_cli(*args, *QUICK, cwd=workdir)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and fragment in done.stderr


@pytest.mark.skipif(not is_available("openvino"), reason="OpenVINO is an optional peer")
def test_openvino_plugs_in_when_installed(workdir):
    done = run_cli("bench", "mlp.onnx", "--batch", "2", "--target", TARGET, "--compare", "openvino", "--json", "-", *QUICK, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["comparisons"]["openvino"]["outputs_agree"]


def test_openvino_copy_of_a_qdq_model_computes_the_same(workdir):
    """OpenVINO 2026.4 throws on QDQ pairs after the embedding lookups; its copy moves them onto
    the tables, and onnxruntime gets bit-identical outputs from both files."""
    import onnxruntime as ort

    from sparsec.bench.openvino_qdq import fold_lookup_qdq

    model = onnx.load(str(workdir / "encoder_int8.onnx"))
    assert fold_lookup_qdq(model) == 2  # word gather, position slice
    lookups = {n.output[0] for n in model.graph.node if n.op_type in ("Gather", "Slice")}
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in lookups]
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 50, (1, 8)).astype(np.int64)}
    original = ort.InferenceSession(str(workdir / "encoder_int8.onnx")).run(None, feeds)
    copy = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    np.testing.assert_array_equal(copy[0], original[0])


def test_openvino_copy_leaves_per_axis_pairs():
    """A per-axis pair's axis counts in the lookup's output (rank 3 here), not in the table."""
    from onnx import TensorProto, helper, numpy_helper

    from sparsec.bench.openvino_qdq import fold_lookup_qdq

    initializers = [
        numpy_helper.from_array(np.ones((10, 4), np.float32), "table"),
        numpy_helper.from_array(np.full(4, 0.1, np.float32), "scale"),
        numpy_helper.from_array(np.zeros(4, np.uint8), "zero_point"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["rows"]),
        helper.make_node("QuantizeLinear", ["rows", "scale", "zero_point"], ["q"], axis=2),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["dq"], axis=2),
        helper.make_node("Relu", ["dq"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4])], initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    assert fold_lookup_qdq(model) == 0 and len(model.graph.node) == 4


@pytest.mark.skipif(not is_available("openvino"), reason="OpenVINO is an optional peer")
def test_openvino_times_a_qdq_encoder(workdir):
    done = run_cli("bench", "encoder_int8.onnx", "--target", TARGET, "--compare", "openvino", "--rtol", "0.2", "--json", "-", *QUICK, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["engines"]["openvino"]["runs"] >= 2


def test_summary_statistics():
    stats = summarize([[0.001, 0.002, 0.003], [0.004, 0.005, 0.006]], batch=4)
    assert stats["runs"] == 6
    assert stats["latency_ms"]["median"] == pytest.approx(3.5)
    assert stats["round_median_ms"] == pytest.approx({"min": 2.0, "median": 3.5, "max": 5.0})
    assert stats["throughput_items_per_s"] == pytest.approx(4 / 0.0035)


def test_output_comparison():
    reference = [np.array([1.0, -2.0]), np.zeros(3)]
    assert compare_outputs([np.array([1.0, -2.0001]), np.zeros(3)], reference, 1e-3)["outputs_agree"]
    assert not compare_outputs([np.array([1.0, -2.1]), np.zeros(3)], reference, 1e-3)["outputs_agree"]
    assert not compare_outputs([np.array([1.0, -2.0])], reference, 1e-3)["outputs_agree"]
    assert not compare_outputs([np.zeros(2), np.zeros(4)], reference, 1e-3)["outputs_agree"]


def test_workers_get_the_requested_thread_count(workdir, monkeypatch):
    """The parent sets TVM_NUM_THREADS when it reads the artifact; workers must not inherit it."""
    import subprocess

    from sparsec.bench import runner

    seen, original_run = [], subprocess.run

    def spy(command, **kwargs):
        if "sparsec.bench.worker" in command:
            seen.append((command[3], kwargs["env"]["TVM_NUM_THREADS"]))
        return original_run(command, **kwargs)

    import sparsec

    artifact = sparsec.compile(workdir / "other.onnx", workdir / "threads.so", target=TARGET).output
    monkeypatch.setenv("TVM_NUM_THREADS", "2")
    monkeypatch.setattr(runner.subprocess, "run", spy)
    config = runner.BenchConfig(model=artifact, threads=1, seconds=0.05, rounds=1, warmup=0)
    runner.run_benchmark(config)
    assert seen == [("sparsec", "1")]
