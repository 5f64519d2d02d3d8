"""`sparsec compile`: ONNX file -> checked model -> Relax -> optimized, scheduled module ->
one .so with its metadata, written atomically."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sparsec.frontend import load_model
from sparsec.frontend.loader import parse_input_shapes
from sparsec.target import TargetSpec, parse_target

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    output: Path
    target: TargetSpec
    seconds: float
    schedules: dict[str, str] = field(default_factory=dict)  # kernel name -> schedule rule


def compile_model(
    model: str | Path,
    output: str | Path,
    target: str | TargetSpec = "native",
    input_shapes: dict | list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CompileResult:
    """Compile an ONNX model into a self-contained .so that `sparsec.runtime.load` runs."""
    started = time.perf_counter()
    say = _stage_reporter(progress, started)
    spec = target if isinstance(target, TargetSpec) else parse_target(target)
    say(f"loading {model}")
    loaded = load_model(model, parse_input_shapes(input_shapes))

    import tvm

    from sparsec.frontend import import_to_relax
    from sparsec.passes import optimization_pipeline
    from sparsec.runtime.export import attach_metadata, export_atomically
    from sparsec.runtime.metadata import ArtifactMetadata, TensorInfo
    from sparsec.schedules import SCHEDULE_RULE_ATTR

    say("importing to Relax")
    mod = import_to_relax(loaded)
    tvm_target = spec.to_tvm()
    say(f"optimizing and scheduling for {spec.describe()}")
    with tvm_target:
        mod = optimization_pipeline(tvm_target)(mod)
    outputs = _output_infos(mod, loaded, TensorInfo)
    metadata = ArtifactMetadata(
        inputs=tuple(TensorInfo(s.name, s.shape, s.dtype) for s in loaded.inputs),
        outputs=outputs,
        target=spec.as_dict(),
        source=Path(model).name,
    )
    mod = attach_metadata(mod, metadata)
    schedules = {
        gv.name_hint: str(func.attrs[SCHEDULE_RULE_ATTR])
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and SCHEDULE_RULE_ATTR in func.attrs
    }
    say("generating code")
    executable = tvm.compile(mod, tvm_target)
    say(f"writing {output}")
    export_atomically(executable, Path(output))
    return CompileResult(Path(output), spec, time.perf_counter() - started, schedules)


def _output_infos(mod, loaded, tensor_info) -> tuple:
    from tvm import relax

    ret = mod["main"].ret_ty
    types = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    names = [o.name for o in loaded.graph.output]
    infos = []
    for name, ty in zip(names, types):
        shape = tuple(int(d) for d in ty.shape.values)
        infos.append(tensor_info(name, shape, str(ty.dtype)))
    return tuple(infos)


def _stage_reporter(progress: Callable[[str], None] | None, started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress is not None:
            progress(f"[{time.perf_counter() - started:6.1f}s] {message}")

    return say
