"""The tuning workflow with tiny trial counts: `sparsec tune` writes a log, `compile --tuning-log`
applies it (and says which kernels), outputs stay the same; a killed run resumes without
measuring anything twice; corrupt lines and logs of another ISA are reported, not applied; logs
merge; MetaSchedule tunes a dense layer; measurement runs through an RPC tracker on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import TARGET, random_feeds, run_cli

import sparsec
from sparsec import models
from sparsec.target import parse_target
from sparsec.tuning_logs.records import Record, TaskKey, parse_lines, read_log


@pytest.fixture(scope="module")
def pruned_models(tmp_path_factory) -> dict[str, Path]:
    """A pruned fp32 MLP at batch 64 (BSR fp32 kernels) and its QDQ form (BSR int8 kernels)."""
    directory = tmp_path_factory.mktemp("tuning_models")
    fp32 = directory / "pruned_mlp.onnx"
    onnx.save(models.prune(models.mlp((128, 256, 256, 16), batch=64), 0.9, (4, 1)), str(fp32))
    int8_source = directory / "pruned_mlp_1x4.onnx"
    onnx.save(models.prune(models.mlp((128, 256, 256, 16), batch=64), 0.9, (1, 4)), str(int8_source))
    int8 = directory / "pruned_mlp_qdq.onnx"
    models.quantize_qdq(int8_source, int8)
    return {"fp32": fp32, "int8": int8}


def _records(log: Path) -> list[Record]:
    parsed = read_log(log)
    assert not parsed.warnings
    return parsed.records


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_tune_writes_a_log_that_compile_applies(pruned_models, tmp_path, kind):
    model, log = pruned_models[kind], tmp_path / "log.json"
    done = run_cli("tune", str(model), "--log", str(log), "--trials", "12", "--target", TARGET, "--no-metaschedule")
    assert done.returncode == 0, done.stderr
    records = _records(log)
    families = {r.task.family for r in records}
    assert families & ({"f32_bsr_columns", "f32_bsr_rows"} if kind == "fp32" else {"u8s8_bsr"}), families
    assert all(r.latency_us is not None and r.latency_us > 0 for r in records)
    assert "trial" in done.stderr and "over the default" in done.stderr  # plain progress lines, not a terminal

    tuned = sparsec.compile(model, tmp_path / "tuned.so", target=TARGET, tuning_log=log)
    plain = sparsec.compile(model, tmp_path / "plain.so", target=TARGET)
    best = read_log(log).best(parse_target(TARGET).isa())
    assert len(tuned.tuned) == len({r.task for r in records}) == len(best)  # every task's best record applied
    for name, candidate in tuned.tuned.items():
        assert json.loads(candidate) in [record.candidate for record in best.values()], name
    a, b = sparsec.load(tuned.output), sparsec.load(plain.output)
    feeds = random_feeds(a)
    np.testing.assert_allclose(a.run(None, feeds)[0], b.run(None, feeds)[0], rtol=1e-5, atol=1e-5)


class _ScriptedMeasurer:
    """Times nothing: hands out latencies per candidate as a noisy machine might. In the search,
    the second candidate measured gets a lucky 50 us; re-timed, everything but the default
    takes 120 us and the default 100 us."""

    def __init__(self):
        self.calls = 0
        self.rpc = None

    def where(self) -> str:
        return "a script"

    def time(self, lib, arrays) -> float:
        self.calls += 1
        return {1: 100.0, 2: 50.0}.get(self.calls, 130.0) if self.calls <= BUDGET else (100.0 if self.calls % 2 else 120.0)


BUDGET = 4


def test_a_lucky_winner_is_timed_again_against_the_default(pruned_models, tmp_path):
    """The search's winner and the default are re-timed alternately; the confirmed medians decide,
    so compile keeps the default here and resuming does not confirm again."""
    from sparsec.driver import optimized_module
    from sparsec.tuning_logs.progress import Progress
    from sparsec.tuning_logs.tasks import extract_tasks
    from sparsec.tuning_logs.tuner import CONFIRM_ROUNDS, default_candidate, tune_tasks

    spec = parse_target(TARGET)
    _, mod, _, _ = optimized_module(pruned_models["int8"], spec, None, lambda _line: None, schedule=False)
    task = next(t for t in extract_tasks(mod, spec.to_tvm()) if t.key.family == "u8s8_bsr")
    log, measurer = tmp_path / "log.json", _ScriptedMeasurer()
    report = tune_tasks([task], spec, log, BUDGET, measurer, Progress(), metaschedule=False)
    assert measurer.calls == BUDGET + 2 * CONFIRM_ROUNDS
    confirmed = [r for r in _records(log) if r.confirmed]
    assert sorted(r.latency_us for r in confirmed) == [100.0, 120.0]
    best = read_log(log).best(spec.isa())[task.key]
    assert best.confirmed and best.candidate == default_candidate(task)  # not the lucky 50 us record
    assert report.outcomes[0].best_us == report.outcomes[0].default_us == 100.0

    measurer.calls = 0
    tune_tasks([task], spec, log, BUDGET, measurer, Progress(), metaschedule=False)
    assert measurer.calls == 0  # every candidate and the confirmation are in the log


def test_a_log_from_one_model_serves_another_with_the_same_layer_shapes(tmp_path):
    first, second, log = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "log.json"
    config = models.EncoderConfig(hidden=64, heads=2, ffn=128, layers=1, vocab=50)
    onnx.save(models.transformer_encoder(config, seq=16, seed=1), str(first))
    onnx.save(models.transformer_encoder(config, seq=16, seed=2), str(second))
    assert run_cli("tune", str(first), "--log", str(log), "--trials", "8", "--no-metaschedule").returncode == 0
    result = sparsec.compile(second, tmp_path / "b.so", target=TARGET, tuning_log=log)
    assert result.tuned and all(rule.startswith("Tuned") for name, rule in result.schedules.items() if name in result.tuned)


def test_attention_int8_matmuls_are_tuned_and_their_records_applied(tmp_path):
    """QK^T and PV of a quantized encoder (the integer batched kernel) are tasks of their own, one
    per shape for all layers and heads; compile applies their records, outputs unchanged."""
    from onnx_zoo import onnxruntime_quantized_encoder

    config = models.EncoderConfig(layers=2, hidden=64, heads=2, ffn=128, vocab=50, max_positions=32)
    model, log = tmp_path / "qdq.onnx", tmp_path / "log.json"
    onnx.save(onnxruntime_quantized_encoder(tmp_path, config), str(model))
    done = run_cli("tune", str(model), "--log", str(log), "--trials", "24", "--target", TARGET, "--no-metaschedule")
    assert done.returncode == 0, done.stderr
    attention = {r.task for r in _records(log) if r.task.family == "u8s8_batch_matmul"}
    assert len(attention) == 2  # QK^T and PV

    tuned = sparsec.compile(model, tmp_path / "tuned.so", target=TARGET, tuning_log=log)
    plain = sparsec.compile(model, tmp_path / "plain.so", target=TARGET)
    assert sum("batch_matmul" in name for name in tuned.tuned) == sum(rule == "U8S8BatchMatmulVNNI" for rule in plain.schedules.values()) == 2 * config.layers
    a, b = sparsec.load(tuned.output), sparsec.load(plain.output)
    feeds = random_feeds(a, vocab=config.vocab)
    np.testing.assert_array_equal(a.run(None, feeds)[0], b.run(None, feeds)[0])


def test_layers_that_differ_only_in_constants_share_a_task(pruned_models, tmp_path):
    """Two QDQ models of the same shapes, pruned and calibrated from other seeds: their int8 BSR
    kernels have other requantize scales and stored-block counts but the same tuning keys, and a
    version-1 record, named by a whole workload, reads back under the key."""
    from sparsec.driver import optimized_module
    from sparsec.schedules.tunable import tagged_task
    from sparsec.tuning_logs.tasks import extract_tasks

    source, other = tmp_path / "other_1x4.onnx", tmp_path / "other_qdq.onnx"
    onnx.save(models.prune(models.mlp((128, 256, 256, 16), batch=64, seed=7), 0.9, (1, 4)), str(source))
    models.quantize_qdq(source, other)
    spec = parse_target(TARGET)
    tasks = {}
    for name, model in (("first", pruned_models["int8"]), ("second", other)):
        _, mod, _, _ = optimized_module(model, spec, None, lambda _line: None, schedule=False)
        tasks[name] = [t for t in extract_tasks(mod, spec.to_tvm()) if t.key.family == "u8s8_bsr"]
    workloads = {name: [tagged_task(t.func)[1] for t in found] for name, found in tasks.items()}
    assert len(tasks["first"]) == 3 and set(workloads["first"]).isdisjoint(workloads["second"])
    assert [t.key for t in tasks["first"]] == [t.key for t in tasks["second"]]

    task = tasks["second"][0]
    old_style = json.loads(Record(TaskKey("u8s8_bsr", workloads["second"][0]), "znver4", {"knobs": task.default_knobs}, 10.0).to_json())
    old_style["version"] = 1
    assert Record.from_json(json.dumps(old_style)).task == task.key


def test_a_killed_tuning_run_resumes_without_measuring_twice(pruned_models, tmp_path):
    model, log = pruned_models["fp32"], tmp_path / "log.json"
    command = [sys.executable, "-m", "sparsec.cli", "tune", str(model), "--log", str(log), "--trials", "16", "--no-metaschedule"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(_records(log))
    assert 3 <= killed_at < 16
    done = run_cli("tune", str(model), "--log", str(log), "--trials", "16", "--no-metaschedule")
    assert done.returncode == 0, done.stderr
    records = _records(log)
    searched = [(r.task, json.dumps(r.candidate, sort_keys=True)) for r in records if not r.confirmed]
    assert len(searched) == len(set(searched))  # nothing searched twice
    confirmed = [(r.task, json.dumps(r.candidate, sort_keys=True)) for r in records if r.confirmed]
    assert len(confirmed) == len(set(confirmed))  # each task's winner-vs-default re-timing at most once
    assert len(records) > killed_at


def test_a_corrupt_line_is_reported_with_its_number_and_skipped(pruned_models, tmp_path):
    log = tmp_path / "log.json"
    assert run_cli("tune", str(pruned_models["fp32"]), "--log", str(log), "--trials", "4", "--no-metaschedule").returncode == 0
    lines = log.read_text().splitlines()
    lines.insert(1, lines[1][: len(lines[1]) // 2])  # a half-written record
    log.write_text("\n".join(lines) + "\n")
    parsed = parse_lines(lines, "log.json")
    assert parsed.warnings == [parsed.warnings[0]] and parsed.warnings[0].startswith("log.json:2: skipped a corrupt record")
    assert len(parsed.records) == len(lines) - 1
    done = run_cli("compile", str(pruned_models["fp32"]), "-o", str(tmp_path / "m.so"), "--tuning-log", str(log))
    assert done.returncode == 0, done.stderr
    assert f"{log}:2: skipped a corrupt record" in done.stderr and "kernels use tuned records" in done.stderr


def test_a_log_for_another_isa_is_reported_and_not_applied(pruned_models, tmp_path):
    log = tmp_path / "log.json"
    assert run_cli("tune", str(pruned_models["fp32"]), "--log", str(log), "--trials", "4", "--no-metaschedule").returncode == 0
    other = tmp_path / "other.json"
    other.write_text("".join(Record(r.task, "cascadelake", r.candidate, r.latency_us).to_json() + "\n" for r in _records(log)))
    messages = []
    result = sparsec.compile(pruned_models["fp32"], tmp_path / "m.so", target=TARGET, tuning_log=other, progress=messages.append)
    assert not result.tuned
    assert any("was tuned for cascadelake" in m and "not applied" in m for m in messages)


def test_merge_keeps_every_distinct_record(tmp_path):
    key = TaskKey("f32_matmul", '{"buffers": []}')
    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    first, second = Record(key, "znver4", {"knobs": {"rows": 1}}, 5.0), Record(key, "znver4", {"knobs": {"rows": 2}}, 4.0)
    a.write_text(first.to_json() + "\n")
    b.write_text(first.to_json() + "\n" + second.to_json() + "\n")
    done = run_cli("tune", "--merge", str(a), str(b), "-o", str(merged))
    assert done.returncode == 0, done.stderr
    assert _records(merged) == [first, second]
    assert read_log(merged).best("znver4")[key] == second


def test_metaschedule_tunes_a_dense_layer_and_compile_replays_its_trace(tmp_path):
    model, log = tmp_path / "dense.onnx", tmp_path / "log.json"
    onnx.save(models.mlp((64, 64), batch=16), str(model))
    done = run_cli("tune", str(model), "--log", str(log), "--trials", "20")
    assert done.returncode == 0, done.stderr
    # the search's record (a trace that wins the search is logged again, confirmed)
    traces = [r for r in _records(log) if "trace" in r.candidate and not r.confirmed]
    assert len(traces) == 1 and traces[0].task.family == "f32_matmul" and traces[0].latency_us is not None
    # apply the trace even if the knobs won: a log holding only that record
    only_trace = tmp_path / "trace.json"
    only_trace.write_text(traces[0].to_json() + "\n")
    tuned = sparsec.compile(model, tmp_path / "tuned.so", target=TARGET, tuning_log=only_trace)
    assert len(tuned.tuned) == 1 and "trace" in json.loads(next(iter(tuned.tuned.values())))
    plain = sparsec.compile(model, tmp_path / "plain.so", target=TARGET)
    a, b = sparsec.load(tuned.output), sparsec.load(plain.output)
    feeds = random_feeds(a)
    np.testing.assert_allclose(a.run(None, feeds)[0], b.run(None, feeds)[0], rtol=1e-5, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(ready, what: str, seconds: float = 120) -> None:
    """Poll instead of sleeping a fixed time: on a loaded machine, starting a TVM process takes
    from one to tens of seconds."""
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_servers(port: int, key: str) -> int:
    from tvm import rpc

    summary = rpc.connect_tracker("127.0.0.1", port).summary()
    return sum(int(entry.get("free", 0)) for name, entry in summary.get("queue_info", {}).items() if name == key)


def test_measurement_through_an_rpc_tracker_on_loopback(pruned_models, tmp_path):
    """Knob candidates and MetaSchedule's candidates are timed on the tracker's two servers."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # tracker and servers each in a group of their own: their popen workers go down with them
    tracker_command = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]
    tracker = subprocess.Popen(tracker_command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    servers, server_logs = [], [tmp_path / f"server{i}.log" for i in range(2)]
    try:
        _wait_until(lambda: _accepts_connections(port), "the RPC tracker to listen")
        for server_log in server_logs:
            server_command = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", f"--tracker=127.0.0.1:{port}", "--key=sparsec-test"]
            with open(server_log, "w") as sink:
                servers.append(subprocess.Popen(server_command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_until(lambda: _free_servers(port, "sparsec-test") == 2, "both RPC servers to register")
        rpc_flags = ["--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "sparsec-test"]
        log = tmp_path / "log.json"
        done = run_cli("tune", str(pruned_models["fp32"]), "--log", str(log), "--trials", "6", "--no-metaschedule", *rpc_flags)
        assert done.returncode == 0, done.stderr
        assert "RPC key sparsec-test" in done.stderr
        records = _records(log)
        assert records and all(r.latency_us is not None for r in records), [r.error for r in records]

        dense, dense_log = tmp_path / "dense.onnx", tmp_path / "dense.json"
        onnx.save(models.mlp((64, 64), batch=16), str(dense))
        done = run_cli("tune", str(dense), "--log", str(dense_log), "--trials", "8", *rpc_flags)
        assert done.returncode == 0, done.stderr
        assert any("trace" in r.candidate and r.latency_us is not None for r in _records(dense_log))
        loaded = [line for server_log in server_logs for line in server_log.read_text().splitlines() if "load_module" in line]
        assert any(not line.endswith("candidate.so") for line in loaded), loaded  # MetaSchedule's own uploads
    finally:
        for process in [*servers, tracker]:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_rpc_flags_are_checked_and_an_unreachable_tracker_stops_the_run(pruned_models, tmp_path):
    log = tmp_path / "l.json"
    done = run_cli("tune", str(pruned_models["fp32"]), "--log", str(log), "--rpc-tracker", "nohostport")
    assert done.returncode == 2 and "--rpc-tracker 'nohostport': expected HOST:PORT" in done.stderr
    port = _free_port()
    done = run_cli("tune", str(pruned_models["fp32"]), "--log", str(log), "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "k")
    assert done.returncode == 2 and f"error: RPC tracker 127.0.0.1:{port} (key k)" in done.stderr and "Traceback" not in done.stderr
    assert not log.exists()  # nothing measured, nothing written
