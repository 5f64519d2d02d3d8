"""One engine, one model, one process: warm up, run for a time window, print the latencies (s)
as JSON; optionally save the outputs of the first run.

    python -m sparsec.bench.worker ENGINE MODEL FEEDS.npz --threads N --seconds S [--outputs OUT.npz]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .engines import ENGINES, open_engine

MIN_RUNS = 3


def measure(run, feeds: dict[str, np.ndarray], seconds: float, warmup: int) -> list[float]:
    for _ in range(warmup):
        run(feeds)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < MIN_RUNS:
        start = time.perf_counter()
        run(feeds)
        latencies.append(time.perf_counter() - start)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("model")
    parser.add_argument("feeds")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--outputs", help="save the outputs of one run to this .npz")
    args = parser.parse_args()
    with np.load(args.feeds) as data:
        feeds = {name: data[name] for name in data.files}
    run = open_engine(args.engine, args.model, args.threads)
    if args.outputs:
        outputs = run(feeds)
        np.savez(args.outputs, *[np.asarray(o) for o in outputs])
    print(json.dumps(measure(run, feeds, args.seconds, args.warmup)))


if __name__ == "__main__":
    main()
