"""Bring up TVM's runtime library without the `tvm` package (no compiler in the deployment)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path

# Entry points that compiled kernels reach through module context symbols. Only TVM's compiler
# library registers them on load, so a runtime-only process must register them itself, or the
# first parallel kernel jumps through a null pointer.
_BACKEND_CONTEXT_SYMBOLS = (
    "TVMBackendParallelLaunch",
    "TVMBackendParallelBarrier",
    "TVMBackendAllocWorkspace",
    "TVMBackendFreeWorkspace",
)


def runtime_library_path() -> Path:
    """libtvm_runtime.so inside the installed apache-tvm wheel, found without importing tvm."""
    override = os.environ.get("SPARSEC_TVM_RUNTIME")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("apache-tvm is not installed: its lib/libtvm_runtime.so is needed to run artifacts")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "lib" / "libtvm_runtime.so"
        if candidate.is_file():
            return candidate
    raise ImportError("libtvm_runtime.so not found in the apache-tvm package")


def ensure_runtime_loaded(num_threads: int | None = None) -> int:
    """Load libtvm_runtime once per process; returns the thread count the pool uses.

    TVM reads TVM_NUM_THREADS when its pool starts and otherwise assumes hyper-threading and
    halves the cores (one thread on a 2-vCPU machine), so it is set here unless the user has.
    The pool, and so the thread count, is per process: the first load decides it.
    """
    os.environ.setdefault("TVM_NUM_THREADS", str(num_threads or default_num_threads()))
    active = int(os.environ["TVM_NUM_THREADS"])
    if num_threads is not None and active != num_threads:
        warnings.warn(f"TVM's thread pool runs {active} threads in this process; {num_threads} requested", stacklevel=3)
    _load_runtime_library()
    return active


@lru_cache(maxsize=1)
def _load_runtime_library() -> None:
    import tvm_ffi  # noqa: F401 - loads libtvm_ffi, which libtvm_runtime links against

    runtime = ctypes.CDLL(str(runtime_library_path()), ctypes.RTLD_GLOBAL)
    register = runtime.TVMFFIEnvModRegisterContextSymbol
    register.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    for name in _BACKEND_CONTEXT_SYMBOLS:
        address = ctypes.cast(getattr(runtime, name), ctypes.c_void_p).value
        register(f"__{name}".encode(), address)


def default_num_threads() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
