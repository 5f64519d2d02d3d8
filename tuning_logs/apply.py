"""`compile --tuning-log`: the pass that rebuilds each kernel a log has a record for with the
record's best candidate, before the default schedules see the module."""

from __future__ import annotations

import logging

import tvm
from tvm import tirx
from tvm.ir import IRModule
from tvm.target import Target

from sparsec.schedules.apply import mark_scheduled

from .records import LoadedLog, Record, TaskKey
from .tasks import build_for_key, task_key_of

log = logging.getLogger(__name__)

TUNED_ATTR = "sparsec.tuned"


@tvm.transform.module_pass(opt_level=0, name="sparsec.ApplyTuningRecords")
class ApplyTuningRecords:
    """`applied`: kernel name -> the record used; `failed`: kernel name -> why a record was not."""

    def __init__(self, tuning_log: LoadedLog, isa: str, target: Target):
        self.best: dict[TaskKey, Record] = tuning_log.best(isa)
        self.target = target
        self.applied: dict[str, Record] = {}
        self.failed: dict[str, str] = {}

    def transform_module(self, mod: IRModule, _ctx) -> IRModule:
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            key = task_key_of(func, self.target)
            record = self.best.get(key) if key is not None else None
            if record is None:
                continue
            try:
                tuned = build_for_key(key, func, record.candidate, self.target)
            except Exception as err:  # noqa: BLE001 - a record that no longer fits falls back to the default
                self.failed[gvar.name_hint] = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
                continue
            if not (tuned.attrs is not None and tuned.attrs.get("tirx.is_scheduled", False)):
                tuned = mark_scheduled(tuned, "Tuned" + "".join(part.title() for part in key.family.split("_")))
            updated[gvar] = tuned.with_attr(TUNED_ATTR, True)
            self.applied[gvar.name_hint] = record
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod
