"""Measuring candidates: each is built here, then timed on this host, or on a machine that a TVM RPC
tracker hands out (`--rpc-tracker HOST:PORT --rpc-key KEY`: TVM's own rpc_tracker and
rpc_server processes; the built library is uploaded and timed there)."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import tirx
from tvm.target import Target

from sparsec.errors import SparsecError

# Per candidate: repeat the timed run until it lasts this long, take the median of REPEATS.
MIN_REPEAT_MS = 50
REPEATS = 3


@dataclass(frozen=True)
class RPCSettings:
    tracker_host: str
    tracker_port: int
    key: str
    timeout_s: int = 60

    @staticmethod
    def parse(tracker: str, key: str | None) -> RPCSettings:
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise SparsecError(f"--rpc-tracker {tracker!r}: expected HOST:PORT")
        if not key:
            raise SparsecError("--rpc-tracker needs --rpc-key (the key the RPC servers registered with)")
        return RPCSettings(host, int(port), key)


def build_kernel(func: tirx.PrimFunc, target: Target) -> tvm.runtime.Module:
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    return tvm.tirx.build(mod, target=target)


def output_buffers(func: tirx.PrimFunc, input_count: int) -> list[np.ndarray]:
    return [np.zeros([int(d) for d in p.shape], str(p.dtype)) for p in func.params[input_count:]]


class Measurer:
    """Times built kernels: `time(lib, arrays)` -> median microseconds."""

    def __init__(self, rpc: RPCSettings | None = None):
        self.rpc = rpc
        if rpc is not None:
            _check_reachable(rpc)
        self._scratch = tempfile.TemporaryDirectory(prefix="sparsec-tune-")

    def where(self) -> str:
        return "this host" if self.rpc is None else f"RPC key {self.rpc.key} via {self.rpc.tracker_host}:{self.rpc.tracker_port}"

    def time(self, lib: tvm.runtime.Module, arrays: list[np.ndarray]) -> float:
        if self.rpc is None:
            return _time_on(lib, tvm.cpu(0), arrays)
        return self._time_remote(lib, arrays)

    def _time_remote(self, lib: tvm.runtime.Module, arrays: list[np.ndarray]) -> float:
        from tvm import rpc

        path = Path(self._scratch.name) / "candidate.so"
        lib.export_library(str(path))
        try:
            tracker = rpc.connect_tracker(self.rpc.tracker_host, self.rpc.tracker_port)
            session = tracker.request(self.rpc.key, priority=1, session_timeout=self.rpc.timeout_s)
        except (OSError, RuntimeError) as err:
            raise SparsecError(f"RPC tracker {self.rpc.tracker_host}:{self.rpc.tracker_port} (key {self.rpc.key}): {err}") from None
        session.upload(str(path))
        remote = session.load_module(path.name)
        return _time_on(remote, session.cpu(0), arrays)

    def close(self) -> None:
        self._scratch.cleanup()


def _check_reachable(rpc: RPCSettings) -> None:
    """Fail in seconds, not after TVM's minute of retries, when nothing listens at the tracker."""
    try:
        socket.create_connection((rpc.tracker_host, rpc.tracker_port), timeout=5).close()
    except OSError as err:
        raise SparsecError(f"RPC tracker {rpc.tracker_host}:{rpc.tracker_port} (key {rpc.key}): {err.strerror or err}") from None


def _time_on(lib, device, arrays: list[np.ndarray]) -> float:
    tensors = [tvm.runtime.tensor(a, device=device) for a in arrays]
    timer = lib.time_evaluator("main", device, number=1, repeat=REPEATS, min_repeat_ms=MIN_REPEAT_MS)
    return float(np.median(timer(*tensors).results)) * 1e6
