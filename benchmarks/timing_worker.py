"""Time one engine on one model in a process of its own (TVM's spinning worker threads would
slow a peer engine sharing the process). Prints the latencies, in seconds, as JSON.

    python timing_worker.py sparsec model.so --threads 2 --seconds 10
    python timing_worker.py onnxruntime model.onnx --threads 2 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def sparsec_session(path: str, threads: int):
    import sparsec.runtime

    model = sparsec.runtime.load(path, num_threads=threads)
    specs = [(i.name, i.shape, i.dtype) for i in model.inputs]
    return specs, lambda feeds: model.run(None, feeds)


def onnxruntime_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    specs = [(i.name, tuple(i.shape), _ort_dtype(i.type)) for i in session.get_inputs()]
    return specs, lambda feeds: session.run(None, feeds)


def _ort_dtype(type_name: str) -> str:
    return {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}[type_name]


ENGINES = {"sparsec": sparsec_session, "onnxruntime": onnxruntime_session}


def random_feeds(specs, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in specs:
        if np.issubdtype(np.dtype(dtype), np.integer):
            feeds[name] = rng.integers(0, vocab, shape).astype(dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def time_engine(engine: str, path: str, threads: int, seconds: float, warmup: int, vocab: int) -> list[float]:
    specs, run = ENGINES[engine](path, threads)
    feeds = random_feeds(specs, vocab)
    for _ in range(warmup):
        run(feeds)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < 3:
        start = time.perf_counter()
        run(feeds)
        latencies.append(time.perf_counter() - start)
    return latencies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=30522, help="token ids are drawn below this")
    args = parser.parse_args()
    print(json.dumps(time_engine(args.engine, args.model, args.threads, args.seconds, args.warmup, args.vocab)))
