"""`sparsec bench`: latency and throughput of a compiled model, optionally against peer engines
(onnxruntime; OpenVINO when installed) on the same ONNX file, inputs, threads and batch.

Each engine is timed in a worker process of its own, engines alternating round by round: TVM's
thread pool keeps spinning after a call and would slow a peer engine sharing its process, and
the machines are shared, so the spread across rounds is part of every result.
"""

from .runner import BenchConfig, run_benchmark

__all__ = ["BenchConfig", "run_benchmark"]
