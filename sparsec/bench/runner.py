"""Orchestrates a benchmark: compile if needed, make the inputs, time every engine in
alternating worker processes, compare outputs, summarize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparsec.errors import SparsecError

from .engines import ENGINES, is_available
from .machine import machine_info, versions
from .stats import compare_outputs, summarize

SCHEMA = "sparsec-bench/1"


@dataclass
class BenchConfig:
    model: Path  # a sparsec artifact (.so) or an ONNX file (compiled first)
    onnx: Path | None = None  # what peers run; defaults to `model` when it is ONNX
    compare: tuple[str, ...] = ()
    target: str = "native"
    input_shapes: list[str] = field(default_factory=list)
    batch: int | None = None
    threads: int = 1
    seconds: float = 10.0
    rounds: int = 3
    warmup: int = 3
    inputs: dict[str, Path] = field(default_factory=dict)
    rtol: float = 1e-3
    seed: int = 0


def run_benchmark(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _line: None)
    _check_config(config)
    with tempfile.TemporaryDirectory(prefix="sparsec-bench-") as scratch:
        scratch = Path(scratch)
        artifact = _artifact(config, scratch, say)
        from sparsec.runtime import load

        metadata = load(artifact).metadata  # no kernel runs here: the parent's pool stays idle
        feeds = _feeds(config, metadata.inputs)
        np.savez(scratch / "feeds.npz", **feeds)
        # label -> (engine, file): peer engines run the ONNX model; a peer artifact is sparsec again
        engines = {"sparsec": ("sparsec", str(artifact))}
        for peer in config.compare:
            engines[peer] = ("sparsec", peer) if is_artifact(peer) else (peer, str(config.onnx or config.model))
        latencies: dict[str, list[list[float]]] = {label: [] for label in engines}
        for round_index in range(config.rounds):
            for index, (label, (engine, path)) in enumerate(engines.items()):
                outputs = scratch / f"outputs{index}.npz" if round_index == 0 else None
                latencies[label].append(_time_in_worker(engine, path, scratch / "feeds.npz", config, outputs))
                median_ms = float(np.median(latencies[label][-1])) * 1e3
                say(f"round {round_index + 1}/{config.rounds}: {label} median {median_ms:.2f} ms over {len(latencies[label][-1])} runs")
        batch = metadata.inputs[0].shape[0] if metadata.inputs and metadata.inputs[0].shape else 1
        report = {
            "schema": SCHEMA,
            "model": str(config.model),
            "batch": int(batch),
            "threads": config.threads,
            "seconds_per_round": config.seconds,
            "rounds": config.rounds,
            "machine": machine_info(),
            "versions": versions(),
            "engines": {engine: summarize(rounds, batch) for engine, rounds in latencies.items()},
            "comparisons": {},
        }
        ours = _load_outputs(scratch / "outputs0.npz")
        for index, peer in enumerate(config.compare, start=1):
            comparison = compare_outputs(ours, _load_outputs(scratch / f"outputs{index}.npz"), config.rtol)
            comparison["speedup"] = report["engines"][peer]["latency_ms"]["median"] / report["engines"]["sparsec"]["latency_ms"]["median"]
            report["comparisons"][peer] = comparison
    return report


def _check_config(config: BenchConfig) -> None:
    if not config.model.is_file():
        raise SparsecError(f"{config.model}: no such file")
    is_onnx = config.model.suffix == ".onnx"
    if len(set(config.compare)) != len(config.compare):
        raise SparsecError("--compare: a peer is named twice")
    for peer in config.compare:
        if is_artifact(peer):
            if not Path(peer).is_file():
                raise SparsecError(f"--compare {peer}: no such file")
            continue
        if peer == "sparsec" or peer not in ENGINES:
            peers = ", ".join(e for e in ENGINES if e != "sparsec")
            raise SparsecError(f"--compare {peer}: unknown engine (peers: {peers}, or another sparsec artifact FILE.so)")
        if not is_available(peer):
            raise SparsecError(f"--compare {peer}: {peer} is not installed")
    if any(not is_artifact(peer) for peer in config.compare) and not is_onnx and config.onnx is None:
        raise SparsecError("--compare needs the ONNX model the peers run: bench model.onnx, or pass --onnx model.onnx")
    if config.onnx is not None and not config.onnx.is_file():
        raise SparsecError(f"--onnx {config.onnx}: no such file")
    if not is_onnx and (config.batch or config.input_shapes):
        raise SparsecError(f"{config.model}: --batch and --input-shape apply when compiling an ONNX model, not to an artifact")


def is_artifact(peer: str) -> bool:
    """A --compare value naming a compiled model (another build of sparsec: untuned, older)
    rather than a peer engine."""
    return peer.endswith(".so")


def _artifact(config: BenchConfig, scratch: Path, say) -> Path:
    if config.model.suffix != ".onnx":
        return config.model
    from sparsec.driver import compile_model
    from sparsec.frontend.loader import load_model, parse_input_shapes

    shapes = parse_input_shapes(config.input_shapes)
    if config.batch:
        loaded = load_model(config.model, shapes, for_compile=False)
        for spec in loaded.inputs:
            if spec.name not in shapes and spec.shape:
                if spec.shape[0] not in (None, config.batch):
                    raise SparsecError(f"--batch {config.batch}: input {spec.name!r} has its batch fixed at {spec.shape[0]} by the model")
                shapes[spec.name] = (config.batch, *spec.shape[1:])
    return compile_model(config.model, scratch / "model.so", target=config.target, input_shapes=shapes, progress=say).output


def random_input(spec, rng: np.random.Generator) -> np.ndarray:
    """Valid random data for an input of a compiled model (its metadata's TensorInfo)."""
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        # token ids: any row of their table; other integers (masks, segment ids): 0 or 1
        high = spec.value_range[1] if spec.value_range else 2
        return rng.integers(0, high, spec.shape).astype(spec.dtype)
    return rng.standard_normal(spec.shape).astype(spec.dtype)


def _feeds(config: BenchConfig, inputs) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    feeds = {}
    for spec in inputs:
        feeds[spec.name] = _read_npy(config.inputs[spec.name]) if spec.name in config.inputs else random_input(spec, rng)
    unknown = set(config.inputs) - {spec.name for spec in inputs}
    if unknown:
        raise SparsecError(f"--input {', '.join(sorted(unknown))}: the model has no such input")
    return feeds


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.ascontiguousarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise SparsecError(f"--input {path}: {err}") from None


def _time_in_worker(engine: str, path: str, feeds: Path, config: BenchConfig, outputs: Path | None) -> list[float]:
    command = [
        sys.executable, "-m", "sparsec.bench.worker", engine, path, str(feeds),
        "--threads", str(config.threads), "--seconds", str(config.seconds), "--warmup", str(config.warmup),
    ]  # fmt: skip
    if outputs is not None:
        command += ["--outputs", str(outputs)]
    # TVM sizes its pool from TVM_NUM_THREADS, which this process may have set already (loading
    # the artifact's metadata does): give each worker the requested count explicitly.
    env = dict(os.environ, TVM_NUM_THREADS=str(config.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise SparsecError(f"{engine} failed on {path}: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load_outputs(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]
