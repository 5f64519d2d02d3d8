"""Untuned sparsec vs onnxruntime on a BERT-base encoder (12 layers, hidden 768, seq 128,
batch 1, fp32, random weights), both on the same ONNX file, each engine in its own process,
alternating rounds. Prints a Markdown table for BENCHMARKS.md.

    python benchmarks/bert_base_untuned.py --rounds 5 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import onnx

import sparsec
from sparsec import models

HERE = Path(__file__).parent


def time_in_subprocess(engine: str, path: Path, threads: int, seconds: float) -> list[float]:
    command = [sys.executable, str(HERE / "timing_worker.py"), engine, str(path), "--threads", str(threads), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sparsec-bench"))
    parser.add_argument("--target", default="native")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    onnx_path, so_path = args.workdir / "bert_base.onnx", args.workdir / "bert_base.so"
    if not onnx_path.exists():
        onnx.save(models.transformer_encoder(models.BERT_BASE, seq=128, batch=1), str(onnx_path))
    started = time.perf_counter()
    result = sparsec.compile(onnx_path, so_path, target=args.target)
    compile_seconds = time.perf_counter() - started

    medians = {"sparsec": [], "onnxruntime": []}
    for round_index in range(args.rounds):
        for engine in medians:
            latencies = time_in_subprocess(engine, so_path if engine == "sparsec" else onnx_path, args.threads, args.seconds)
            medians[engine].append(statistics.median(latencies) * 1e3)
            print(f"round {round_index + 1}: {engine} median {medians[engine][-1]:.1f} ms over {len(latencies)} runs", file=sys.stderr)

    ours, peer = statistics.median(medians["sparsec"]), statistics.median(medians["onnxruntime"])
    print(f"machine: {cpu_model()}, {args.threads} threads; target {result.target.describe()}; compile {compile_seconds:.0f} s")
    print("| engine | median of round medians (ms) | min / max round median (ms) |")
    print("|---|---|---|")
    for engine, values in medians.items():
        print(f"| {engine} | {statistics.median(values):.1f} | {min(values):.1f} / {max(values):.1f} |")
    print(f"\nsparsec / onnxruntime latency ratio: {ours / peer:.2f} (target: <= 1.5)")


if __name__ == "__main__":
    main()
