"""The --target string: the familiar `llvm -mcpu=X -mattr=+a,+b` form, or `native`, turned into
TVM 0.27's dict target after checking the CPU name (TVM silently emits generic code for an
unknown one)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TargetError

# /proc/cpuinfo flag -> LLVM feature, for the features LLVM's host detection misses in VMs.
CPUINFO_FEATURES = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512cd": "avx512cd",
    "avx512_vnni": "avx512vnni",
    "avx_vnni": "avxvnni",
    "avx512_bf16": "avx512bf16",
    "avx512_fp16": "avx512fp16",
    "amx_tile": "amx-tile",
    "amx_int8": "amx-int8",
    "amx_bf16": "amx-bf16",
}


@dataclass(frozen=True)
class TargetSpec:
    """A parsed CPU target. `as_dict()` is what `tvm.target.Target` takes."""

    mcpu: str
    mattr: tuple[str, ...] = ()
    num_cores: int | None = None
    source: str = field(default="", compare=False)

    def as_dict(self) -> dict:
        spec: dict = {"kind": "llvm", "mcpu": self.mcpu}
        if self.mattr:
            spec["mattr"] = list(self.mattr)
        if self.num_cores:
            spec["num-cores"] = self.num_cores
        return spec

    def to_tvm(self):
        from tvm.target import Target

        return Target(self.as_dict())

    def has_feature(self, feature: str) -> bool:
        """Whether the CPU has an LLVM feature, by its name or an explicit +feature."""
        if f"+{feature}" in self.mattr:
            return True
        if f"-{feature}" in self.mattr:
            return False
        from tvm.target.codegen import llvm_cpu_has_features

        return bool(llvm_cpu_has_features([feature], self.to_tvm()))

    def isa(self) -> str:
        """What tuning records are keyed by: the CPU and its explicit features (not the cores)."""
        return " ".join([self.mcpu, *sorted(self.mattr)])

    def describe(self) -> str:
        parts = [f"llvm -mcpu={self.mcpu}"]
        if self.mattr:
            parts.append("-mattr=" + ",".join(self.mattr))
        return " ".join(parts)


def parse_target(text: str) -> TargetSpec:
    """Parse `native`, `llvm`, or `llvm -mcpu=X [-mattr=+a,-b] [-num-cores=N]`."""
    text = text.strip()
    if text == "native":
        return native_target()
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise TargetError(f"--target {text!r}: {err}") from None
    if not words or words[0] != "llvm":
        raise TargetError(f"--target {text!r}: only CPU targets are supported: 'llvm -mcpu=NAME' or 'native'")
    options = _parse_options(text, words[1:])
    mcpu = options.pop("mcpu", None)
    if mcpu is None:
        raise TargetError(f"--target {text!r}: name the CPU with -mcpu=NAME (e.g. skylake-avx512), or use 'native'")
    _check_mcpu(text, mcpu)
    mattr = tuple(a for a in options.pop("mattr", "").split(",") if a)
    for attr in mattr:
        if attr[0] not in "+-":
            raise TargetError(f"--target {text!r}: -mattr entries start with + or -, got {attr!r}")
    num_cores = options.pop("num-cores", None)
    if num_cores is not None and not num_cores.isdigit():
        raise TargetError(f"--target {text!r}: -num-cores takes a whole number, got {num_cores!r}")
    if options:
        raise TargetError(f"--target {text!r}: unknown option(s) {', '.join('-' + k for k in options)}")
    return TargetSpec(mcpu, mattr, int(num_cores) if num_cores else None, source=text)


def _parse_options(text: str, words: list[str]) -> dict[str, str]:
    options = {}
    for word in words:
        if not word.startswith("-") or "=" not in word:
            raise TargetError(f"--target {text!r}: expected -key=value, got {word!r}")
        key, value = word.lstrip("-").split("=", 1)
        options[key] = value
    return options


def _check_mcpu(text: str, mcpu: str) -> None:
    from tvm.target.codegen import llvm_is_valid_cpu

    if not llvm_is_valid_cpu(mcpu, "x86_64-unknown-linux-gnu"):
        raise TargetError(
            f"--target {text!r}: unknown CPU {mcpu!r} for -mcpu (try skylake-avx512, cascadelake, "
            "icelake-server, sapphirerapids, znver4, or 'native')"
        )


def native_target(cpuinfo: Path = Path("/proc/cpuinfo")) -> TargetSpec:
    """This host: LLVM's CPU name plus the ISA features /proc/cpuinfo lists (LLVM's detection
    under-reports VNNI/AMX inside VMs)."""
    from tvm.target.codegen import llvm_get_system_cpu

    flags = _cpuinfo_flags(cpuinfo)
    mattr = tuple(f"+{feature}" for flag, feature in CPUINFO_FEATURES.items() if flag in flags)
    return TargetSpec(llvm_get_system_cpu(), mattr, _usable_cores(), source="native")


def _cpuinfo_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
