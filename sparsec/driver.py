"""`sparsec compile`: ONNX file -> checked model -> Relax -> optimized, scheduled module ->
one .so with its metadata, written atomically."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from sparsec import interrupts
from sparsec.frontend import import_to_relax, load_model
from sparsec.frontend.loader import parse_input_shapes
from sparsec.passes import BSROptions, DenseToBSR, Int8LayerDecision, LayerDecision, QDQToInt8, has_vnni, optimization_pipeline
from sparsec.runtime.export import attach_metadata, export_atomically
from sparsec.runtime.metadata import ArtifactMetadata, TensorInfo
from sparsec.quantize import LayerError, QuantizationOptions, quantize_model
from sparsec.schedules import SCHEDULE_RULE_ATTR
from sparsec.target import TargetSpec, parse_target
from sparsec.tuning_logs.apply import ApplyTuningRecords
from sparsec.tuning_logs.records import read_log


@dataclass
class CompileResult:
    output: Path
    target: TargetSpec
    seconds: float
    schedules: dict[str, str] = field(default_factory=dict)  # kernel name -> schedule rule
    layers: list[LayerDecision] = field(default_factory=list)  # float weighted layers, graph order
    quantization_errors: list[LayerError] = field(default_factory=list)  # with `quantize`: per quantized layer
    int8_layers: list[Int8LayerDecision] = field(default_factory=list)  # QDQ layers on integer kernels
    tuned: dict[str, str] = field(default_factory=dict)  # kernel name -> the tuning record's candidate, as JSON


def compile_model(
    model: str | Path,
    output: str | Path,
    target: str | TargetSpec = "native",
    input_shapes: dict | list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    sparse: BSROptions | None = None,
    quantize: QuantizationOptions | None = None,
    tuning_log: str | Path | None = None,
) -> CompileResult:
    """Compile an ONNX model into a self-contained .so that `sparsec.runtime.load` runs.
    `quantize`: quantize the fp32 model to int8 after training (calibrated) first; `tuning_log`:
    apply the best records `sparsec tune` wrote for this target's ISA."""
    started = time.perf_counter()
    say = _stage_reporter(progress, started)
    spec = target if isinstance(target, TargetSpec) else parse_target(target)
    with tempfile.TemporaryDirectory(prefix="sparsec-") as scratch:
        errors: list[LayerError] = []
        source = Path(model)
        if quantize is not None:
            say(f"quantizing {model} to int8 ({quantize.method} calibration on {quantize.calibration_data})")
            source = Path(scratch) / f"{Path(model).stem}.qdq.onnx"
            errors = quantize_model(Path(model), source, quantize)
            for line in quantization_report(errors):
                say(line)
        tuning = _tuning_pass(tuning_log, spec, say) if tuning_log is not None else None
        result = _compile(source, Path(model).name, output, spec, input_shapes, say, sparse, tuning)
    result.seconds = time.perf_counter() - started
    result.quantization_errors = errors
    return result


def quantization_report(errors: list[LayerError]) -> list[str]:
    """One line per quantized layer: its output's relative error against fp32 on the calibration data."""
    return [f"  quantized {e.node}: relative error {e.relative_error:.2%}" for e in errors]


def _tuning_pass(path: str | Path, spec: TargetSpec, say) -> ApplyTuningRecords:
    tuning_log = read_log(path)
    for warning in tuning_log.warnings:
        say(f"warning: {warning}")
    if tuning_log.records and spec.isa() not in tuning_log.isas():
        say(f"warning: {path} was tuned for {', '.join(sorted(tuning_log.isas()))}, not {spec.isa()}: its records are not applied")
    return ApplyTuningRecords(tuning_log, spec.isa(), spec.to_tvm())


def optimized_module(model: Path, spec: TargetSpec, input_shapes, say, sparse=None, tuning=None, schedule: bool = True):
    """(loaded model, optimized module, DenseToBSR pass, QDQToInt8 pass): the compile up to code
    generation. `schedule=False` stops before any kernel is scheduled (for tuning)."""
    say(f"loading {model}")
    loaded = load_model(model, parse_input_shapes(input_shapes))
    say("importing to Relax")
    mod = import_to_relax(loaded)
    tvm_target = spec.to_tvm()
    say(f"optimizing {'and scheduling ' if schedule else ''}for {spec.describe()}")
    sparse_pass = DenseToBSR(sparse)
    int8_pass = QDQToInt8(vnni=has_vnni(tvm_target), sparsity_threshold=sparse.sparsity_threshold if sparse else None)
    with tvm_target:
        mod = optimization_pipeline(tvm_target, sparse_pass, int8_pass, tuned=tuning, schedule=schedule)(mod)
    return loaded, mod, sparse_pass, int8_pass


def _compile(model: Path, source_name: str, output, spec: TargetSpec, input_shapes, say, sparse, tuning) -> CompileResult:
    tvm_target = spec.to_tvm()
    loaded, mod, sparse_pass, int8_pass = optimized_module(model, spec, input_shapes, say, sparse, tuning)
    for line in int8_summary(int8_pass.decisions) + layer_summary(sparse_pass.decisions):
        say(line)
    if tuning is not None:
        say(f"tuning log: {len(tuning.applied)} kernels use tuned records")
        for name, why in tuning.failed.items():
            say(f"warning: the record for {name} could not be applied ({why}); it keeps its default schedule")
    metadata = ArtifactMetadata(
        inputs=tuple(TensorInfo(s.name, s.shape, s.dtype, s.value_range) for s in loaded.inputs),
        outputs=_output_infos(mod, [o.name for o in loaded.graph.output]),
        target=spec.as_dict(),
        source=source_name,
    )
    mod = attach_metadata(mod, metadata)
    schedules = _schedule_rules(mod)
    say(f"scheduled {len(schedules)} kernels: {_count_by_rule(schedules)}")
    say("generating code")
    executable = tvm.compile(mod, tvm_target)
    say(f"writing {output}")
    export_atomically(executable, Path(output))
    tuned = {name: json.dumps(record.candidate, sort_keys=True) for name, record in (tuning.applied.items() if tuning else [])}
    return CompileResult(Path(output), spec, 0.0, schedules, layers=sparse_pass.decisions, int8_layers=int8_pass.decisions, tuned=tuned)


def layer_summary(decisions: list[LayerDecision]) -> list[str]:
    """One line per weighted layer: dense or BSR, block shape, density, estimated speedup."""
    lines = []
    for index, decision in enumerate(decisions):
        plan = decision.plan
        kernel = f"BSR {plan.block[0]}x{plan.block[1]} {plan.loop_order}" if plan.sparse else "dense"
        lines.append(f"  layer {index}: {decision.m}x{decision.k} @ {decision.k}x{decision.n}  {kernel:<18} {_plan_figures(plan)}")
    return lines


def int8_summary(decisions: list[Int8LayerDecision]) -> list[str]:
    """One line per QDQ layer compiled to integer compute, with the instruction path it took."""
    lines = []
    for index, decision in enumerate(decisions):
        plan = decision.plan
        if decision.path == "generic":
            kernel = "int8 (no VNNI)"
        else:
            kernel = f"int8 BSR {plan.block_rows}x4 VNNI" if decision.path == "vnni-bsr" else "int8 dense VNNI"
        detail = f"  {_plan_figures(plan)}" if plan else ""
        shapes = f"{decision.m}x{decision.k} @ {decision.k}x{decision.n}"
        lines.append(f"  int8 layer {index}: {decision.op:<8} {shapes:<22} {kernel:<22}{detail}")
    return lines


def _plan_figures(plan) -> str:
    """A LayerPlan's or Int8LayerPlan's analysis, as both summaries print it."""
    return f"sparsity {plan.sparsity:6.1%}  stored {plan.density:6.1%}  est. {plan.estimated_speedup:4.1f}x vs dense"


def _output_infos(mod: tvm.IRModule, names: list[str]) -> tuple[TensorInfo, ...]:
    ret = mod["main"].ret_ty
    types = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    return tuple(TensorInfo(name, tuple(int(d) for d in ty.shape.values), str(ty.dtype)) for name, ty in zip(names, types))


def _schedule_rules(mod: tvm.IRModule) -> dict[str, str]:
    """Kernel name -> the schedule rule that shaped it ("none": left serial)."""
    return {
        gv.name_hint: str(func.attrs[SCHEDULE_RULE_ATTR]) if SCHEDULE_RULE_ATTR in func.attrs else "none"
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
    }


def _count_by_rule(schedules: dict[str, str]) -> str:
    return ", ".join(f"{rule} {count}" for rule, count in sorted(Counter(schedules.values()).items()))


def _stage_reporter(progress: Callable[[str], None] | None, started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        interrupts.check()  # stop at the next stage even if TVM swallowed the Ctrl-C
        if progress is not None:
            progress(f"[{time.perf_counter() - started:6.1f}s] {message}")

    return say
