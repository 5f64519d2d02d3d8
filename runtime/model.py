"""A compiled model, loaded and run with numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsec.errors import ArtifactError, FeedError

from .metadata import METADATA_FUNCTION, ArtifactMetadata, TensorInfo
from .tvm_runtime import ensure_runtime_loaded

# TVM's kernels assume 64-byte-aligned buffers and use aligned vector loads on them: a feed that
# is not aligned (numpy only guarantees 16 bytes) is copied, or the kernel faults.
ALIGNMENT = 64


class CompiledModel:
    """onnxruntime-style access to a sparsec artifact: `inputs`, `outputs` and
    `run(output_names, feeds)`."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: no such file")
        self.num_threads = ensure_runtime_loaded(num_threads)
        import tvm_ffi

        try:
            library = tvm_ffi.load_module(str(self.path.resolve()))
            self._vm = library["vm_load_executable"]()
        except Exception as err:  # noqa: BLE001 - a foreign .so fails in several ways
            raise ArtifactError(f"{self.path}: not a sparsec artifact ({_first_line(err)})") from None
        self._vm["vm_initialization"](1, 0, 2)  # device type CPU, device 0, pooled allocator
        try:
            self.metadata = ArtifactMetadata.from_json_string(str(self._vm[METADATA_FUNCTION]()))
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"{self.path}: not a sparsec artifact ({_first_line(err)})") from None
        self._main = self._vm["main"]
        self._from_dlpack = tvm_ffi.from_dlpack

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.metadata.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.metadata.outputs

    def get_inputs(self) -> tuple[TensorInfo, ...]:
        return self.inputs

    def get_outputs(self) -> tuple[TensorInfo, ...]:
        return self.outputs

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run on numpy arrays keyed by input name; returns the named outputs (all if None)."""
        selected = self._select_outputs(output_names)
        unknown = set(feeds) - {spec.name for spec in self.inputs}
        if unknown:
            raise FeedError(f"unknown input(s) {', '.join(sorted(unknown))}; the model takes {self._input_names()}")
        args = [self._from_dlpack(_aligned(self._check_feed(spec, feeds))) for spec in self.inputs]
        result = self._main(*args)
        values = list(result) if len(self.outputs) > 1 else [result]
        arrays = [np.from_dlpack(value) for value in values]
        return [arrays[i] for i in selected]

    def _select_outputs(self, output_names: list[str] | None) -> list[int]:
        names = [spec.name for spec in self.outputs]
        if output_names is None:
            return list(range(len(names)))
        missing = [n for n in output_names if n not in names]
        if missing:
            raise FeedError(f"unknown output(s) {', '.join(missing)}; the model has {', '.join(names)}")
        return [names.index(n) for n in output_names]

    def _check_feed(self, spec: TensorInfo, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if spec.name not in feeds:
            raise FeedError(f"missing input {spec.name!r}: expected {_describe(spec)}")
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise FeedError(f"input {spec.name!r}: expected a numpy array, got {type(value).__name__}")
        if value.dtype != np.dtype(spec.dtype):
            raise FeedError(f"input {spec.name!r}: expected dtype {spec.dtype}, got {value.dtype}")
        if tuple(value.shape) != spec.shape:
            raise FeedError(f"input {spec.name!r}: expected shape {_shape(spec.shape)}, got {_shape(value.shape)}")
        if not value.flags.c_contiguous:
            raise FeedError(f"input {spec.name!r}: the array is not C-contiguous; pass np.ascontiguousarray(x)")
        if spec.value_range is not None and value.size:
            # The compiled gather does not bounds-check: an index out of its table would fault.
            low, high = spec.value_range
            smallest, largest = int(value.min()), int(value.max())
            if smallest < low or largest >= high:
                raise FeedError(f"input {spec.name!r}: values must be in [{low}, {high}), got {smallest}..{largest}")
        return value

    def _input_names(self) -> str:
        return ", ".join(spec.name for spec in self.inputs)


def load(path: str | Path, num_threads: int | None = None) -> CompiledModel:
    """Load a sparsec artifact. The thread count is fixed per process by the first load."""
    return CompiledModel(path, num_threads)


def _aligned(array: np.ndarray) -> np.ndarray:
    if array.ctypes.data % ALIGNMENT == 0:
        return array
    buffer = np.empty(array.nbytes + ALIGNMENT, np.uint8)
    offset = -buffer.ctypes.data % ALIGNMENT
    copy = buffer[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def _describe(spec: TensorInfo) -> str:
    return f"{spec.dtype} array of shape {_shape(spec.shape)}"


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
