"""The pass that gives every PrimFunc its default schedule: rules are tried in order, a rule
that fails on a function is skipped (the next rule gets it), and what scheduled each function is
recorded so the compiler can report it."""

from __future__ import annotations

import logging

from tvm import tirx
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

log = logging.getLogger(__name__)

SCHEDULE_RULE_ATTR = "sparsec.schedule_rule"


def mark_scheduled(func: tirx.PrimFunc, rule: str) -> tirx.PrimFunc:
    """Record which rule (or hand-written kernel family) shaped `func`; scheduled functions are
    left alone by the default rules."""
    return func.with_attr("tirx.is_scheduled", True).with_attr(SCHEDULE_RULE_ATTR, rule)


@module_pass(opt_level=0, name="sparsec.ApplyDefaultSchedules")
class ApplyDefaultSchedules:
    def __init__(self, target: Target, rules: list[ScheduleRule]):
        self.target = target
        self.rules = rules

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        updated = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
                scheduled = self._schedule(gvar.name_hint, func)
                if scheduled is not None:
                    updated[gvar] = scheduled
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    def _schedule(self, name: str, func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        for rule in self.rules:
            rule_name = type(rule).__name__
            try:
                sch = rule.apply(func, self.target, False)
            except Exception as err:  # noqa: BLE001 - a rule that cannot shape a function passes it on
                log.debug("rule %s failed on %s: %s", rule_name, name, err)
                continue
            if sch is None:
                continue
            return mark_scheduled(sch.mod["main"], rule_name)
        log.debug("no default schedule for %s: it stays serial", name)
        return None
