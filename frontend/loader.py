"""Read an ONNX file, check it, pin its dynamic input dimensions and infer shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from sparsec.errors import ModelError

from .op_coverage import unsupported_nodes

_SHAPE_SPEC = re.compile(r"^(?P<name>.+)=(?P<dims>\d+(x\d+)*)$")


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and numpy dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]  # None: a dynamic dimension (only when not compiling)
    dtype: str
    value_range: tuple[int, int] | None = None  # [low, high): indices into a table (Gather)


@dataclass
class LoadedModel:
    path: Path
    model: onnx.ModelProto  # checked, input shapes pinned, shapes inferred
    inputs: list[TensorSpec]

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {init.name: init for init in self.graph.initializer}


def parse_input_shapes(specs: list[str] | tuple[str, ...] | dict | None) -> dict[str, tuple[int, ...]]:
    """`["ids=1x128", ...]` (the CLI form) or `{"ids": (1, 128)}` -> {name: shape}."""
    if not specs:
        return {}
    if isinstance(specs, dict):
        return {name: tuple(int(d) for d in dims) for name, dims in specs.items()}
    shapes = {}
    for spec in specs:
        match = _SHAPE_SPEC.match(spec.strip())
        if not match:
            raise ModelError(f"--input-shape {spec!r}: expected NAME=DIMxDIMx... with whole numbers, e.g. input_ids=1x128")
        shapes[match["name"]] = tuple(int(d) for d in match["dims"].split("x"))
    return shapes


def load_model(
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    for_compile: bool = True,
) -> LoadedModel:
    """Load, check and shape-infer an ONNX model. For compiling, every op must be supported and
    every input must end up with a static shape; for inspecting, neither is required."""
    path = Path(path)
    model = _read(path)
    _check(path, model)
    if for_compile:
        _check_ops(path, model)
    inputs = _pin_input_shapes(path, model, input_shapes or {}, require_static=for_compile)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:  # noqa: BLE001 - onnx raises several unrelated types here
        raise ModelError(f"{path}: shape inference failed: {_first_line(err)}") from None
    return LoadedModel(path, model, inputs)


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf decode errors have no common base
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(err)})") from None


def _check(path: Path, model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model if model.ByteSize() < 2**31 - 1 else str(path))
    except onnx.checker.ValidationError as err:
        raise ModelError(f"{path}: invalid ONNX model: {_first_line(err)}") from None


def _check_ops(path: Path, model: onnx.ModelProto) -> None:
    missing = unsupported_nodes(model.graph)
    if missing:
        listed = ", ".join(f"{name} ({op})" for name, op in missing)
        raise ModelError(f"{path}: {len(missing)} node(s) use ops sparsec cannot compile: {listed}")


def _pin_input_shapes(
    path: Path, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], require_static: bool
) -> list[TensorSpec]:
    initializer_names = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializer_names]
    known = {i.name for i in graph_inputs}
    for name in shapes:
        if name not in known:
            raise ModelError(f"--input-shape {name}=...: the model has no input {name!r} (inputs: {', '.join(sorted(known))})")
    specs = []
    for value in graph_inputs:
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        if value.name in shapes:
            shape = shapes[value.name]
            if len(shape) != len(dims):
                raise ModelError(f"--input-shape {value.name}=...: the input has {len(dims)} dimensions, got {len(shape)}")
            for dim, fixed in zip(dims, shape):
                if dim.HasField("dim_value") and dim.dim_value != fixed:
                    raise ModelError(f"--input-shape {value.name}=...: dimension fixed at {dim.dim_value} by the model, got {fixed}")
                dim.Clear()
                dim.dim_value = fixed
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        if None in shape and require_static:
            shown = "x".join(str(d) if d is not None else (dims[k].dim_param or "?") for k, d in enumerate(shape))
            example = "x".join(str(d) if d is not None else "N" for d in shape)
            raise ModelError(f"input {value.name!r} has dynamic shape {shown}: fix it with --input-shape {value.name}={example}")
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        value_range = _index_range(model.graph, value.name) if np.issubdtype(np.dtype(dtype), np.integer) else None
        specs.append(TensorSpec(value.name, shape, dtype, value_range))
    return specs


def _index_range(graph: onnx.GraphProto, name: str) -> tuple[int, int] | None:
    """Valid values of an integer input that indexes a table (token ids into an embedding: a
    Gather on an initializer): [-rows, rows), negative ids counting from the end as in ONNX."""
    tables = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name and node.input[0] in tables:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            rows = int(tables[node.input[0]].dims[axis])
            return (-rows, rows)
    return None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
