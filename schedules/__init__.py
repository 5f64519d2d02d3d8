"""Kernels and their default CPU schedules, tried in order for every fused PrimFunc."""

from tvm.s_tir.dlight.cpu import Reduction
from tvm.target import Target

from .apply import SCHEDULE_RULE_ATTR, ApplyDefaultSchedules
from .f32_conv2d_nchw import F32Conv2dNCHW
from .f32_matmul import F32Matmul
from .injective import Injective
from .row_reduction import RowReduction


def default_rules() -> list:
    return [F32Matmul(), F32Conv2dNCHW(), RowReduction(), Reduction(), Injective()]


def default_schedule_pass(target: Target) -> ApplyDefaultSchedules:
    return ApplyDefaultSchedules(target, default_rules())


__all__ = ["SCHEDULE_RULE_ATTR", "ApplyDefaultSchedules", "default_rules", "default_schedule_pass"]
