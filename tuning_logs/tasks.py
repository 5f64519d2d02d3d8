"""Tuning tasks: the distinct kernels of a compiled model that have a tuning space, each with the
arguments one of its call sites passes (the layer's real BSR arrays and weights; random
activations), and how a candidate (knobs or a MetaSchedule trace) becomes a kernel."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.ir.expr import Constant
from tvm.target import Target

from sparsec.passes.dataflow import call_tir_sites
from sparsec.schedules.f32_matmul import LAYOUT_FREE_ATTR, F32Matmul
from sparsec.schedules.tunable import families, tagged_task, tuning_key

from .records import TaskKey

MATMUL_RULE = F32Matmul()


@dataclass
class Task:
    key: TaskKey
    kernel: str  # its name in the module (the first of its kind)
    func: tirx.PrimFunc  # tagged kernel, or the unscheduled function a schedule rule shapes
    default_knobs: dict | None  # what compile picks without a log (tagged kernels)
    inputs: list = field(default_factory=list)  # np.ndarray (constants) or (shape, dtype) (random)
    call_sites: int = 1

    @property
    def uses_metaschedule(self) -> bool:
        return self.key.family == MATMUL_RULE.family

    def space(self, target: Target) -> list[dict]:
        if self.uses_metaschedule:
            return MATMUL_RULE.space(self.func, target)
        return families()[self.key.family].space(_workload_of(self.func))


def rule_task_key(func: tirx.PrimFunc) -> TaskKey:
    """A schedule-rule task is keyed by the function's structure (shapes, dtypes, the fused
    epilogue), not by its name, so the same layer in another model finds it."""
    buffers = [[[int(d) for d in p.shape], str(p.dtype)] for p in func.params]
    structure = func.without_attr("global_symbol").without_attr(LAYOUT_FREE_ATTR)  # set only when compiling
    workload = {"buffers": buffers, "structure": f"{tvm_ffi.structural_hash(structure) & (2**64 - 1):016x}"}
    return TaskKey(MATMUL_RULE.family, json.dumps(workload, sort_keys=True))


def tagged_task_key(family: str, workload: dict) -> TaskKey:
    """Layers whose kernels differ only in constants (requantize scales, the exact count of
    stored blocks) share a task and its records."""
    return TaskKey(family, json.dumps(tuning_key(family, workload), sort_keys=True))


def _workload_of(func: tirx.PrimFunc) -> dict:
    return json.loads(tagged_task(func)[1])


def task_key_of(func: tirx.PrimFunc, target: Target) -> TaskKey | None:
    tagged = tagged_task(func)
    if tagged is not None:
        family, workload, _ = tagged
        return tagged_task_key(family, json.loads(workload)) if family in families() else None
    if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
        return None
    return rule_task_key(func) if MATMUL_RULE.space(func, target) else None


def extract_tasks(mod: tvm.IRModule, target: Target) -> list[Task]:
    """Distinct tunable kernels of an optimized, not yet default-scheduled module, in call order."""
    tasks: dict[TaskKey, Task] = {}
    for call in call_tir_sites(mod):
        gvar = call.args[0]
        func = mod[gvar]
        key = task_key_of(func, target)
        if key is None:
            continue
        if key in tasks:
            tasks[key].call_sites += 1
            continue
        tagged = tagged_task(func)
        default_knobs = tagged[2] if tagged else MATMUL_RULE.default_knobs(func, target)
        tasks[key] = Task(key, gvar.name_hint, func, default_knobs, [_input_of(arg) for arg in call.args[1].fields])
    return list(tasks.values())


def _input_of(arg: relax.Expr):
    if isinstance(arg, Constant):
        return arg.value.numpy()
    ty = arg.ty
    return tuple(int(d) for d in ty.shape.values), str(ty.dtype)


def build_candidate(task: Task, candidate: dict | None, target: Target) -> tirx.PrimFunc:
    """The task's kernel for a candidate: {"knobs": ...}, {"trace": ...}, or None (the default)."""
    return build_for_key(task.key, task.func, candidate, target)


def build_for_key(key: TaskKey, func: tirx.PrimFunc, candidate: dict | None, target: Target) -> tirx.PrimFunc:
    knobs = None if candidate is None else candidate.get("knobs")
    if key.family != MATMUL_RULE.family:
        return families()[key.family].build(_workload_of(func), knobs)
    if candidate is not None and "trace" in candidate:
        sch = s_tir.Schedule(func)
        s_tir.schedule.Trace.apply_json_to_schedule(candidate["trace"], sch)
        return sch.mod["main"]
    sch = MATMUL_RULE.apply_knobs(func, target, knobs)
    if sch is None:
        raise ValueError(f"knobs {knobs} do not fit {key.describe()}")
    return sch.mod["main"]


def random_inputs(task: Task, seed: int = 0) -> list[np.ndarray]:
    """Constants as they are; activations random (uint8 over their full range)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for value in task.inputs:
        if isinstance(value, np.ndarray):
            arrays.append(value)
            continue
        shape, dtype = value
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(max(info.min, -128), min(info.max, 255) + 1, shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays
