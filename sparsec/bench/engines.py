"""The engines a benchmark can time. Each opens a model for a thread count and returns a
callable from feeds to a list of output arrays. Peers other than onnxruntime are optional."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable

import numpy as np
import onnx

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def open_sparsec(path: str, threads: int) -> Runner:
    import sparsec.runtime

    model = sparsec.runtime.load(path, num_threads=threads)
    return lambda feeds: model.run(None, feeds)


def open_onnxruntime(path: str, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def open_openvino(path: str, threads: int) -> Runner:
    import openvino as ov

    from .openvino_qdq import fold_lookup_qdq

    # OpenVINO's CPU plugin silently runs bf16/int8 on capable CPUs: pin fp32 for a fair figure
    # (QDQ models still run int8: the hint is about floating-point precision).
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    model = onnx.load(path)
    if fold_lookup_qdq(model):  # an equivalent copy it can compile (bench/openvino_qdq.py)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.onnx")
            onnx.save(model, path)
            compiled = ov.Core().compile_model(path, "CPU", config)
    else:
        compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()

    def run(feeds):
        results = request.infer(feeds)
        return [np.array(results[output]) for output in compiled.outputs]

    return run


ENGINES: dict[str, tuple[str, Callable[[str, int], Runner]]] = {
    # name: (module that must be importable, opener)
    "sparsec": ("tvm_ffi", open_sparsec),
    "onnxruntime": ("onnxruntime", open_onnxruntime),
    "openvino": ("openvino", open_openvino),
}
PEERS = ("onnxruntime", "openvino")


def is_available(engine: str) -> bool:
    return engine in ENGINES and importlib.util.find_spec(ENGINES[engine][0]) is not None


def available_peers() -> list[str]:
    return [engine for engine in PEERS if is_available(engine)]


def open_engine(engine: str, path: str, threads: int) -> Runner:
    return ENGINES[engine][1](path, threads)
