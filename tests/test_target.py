import pytest

from sparsec.errors import TargetError
from sparsec.target import native_target, parse_target


def test_string_form_becomes_tvm_dict_target():
    spec = parse_target("llvm -mcpu=cascadelake -mattr=+avx512vnni,-amx-int8 -num-cores=2")
    assert spec.as_dict() == {
        "kind": "llvm",
        "mcpu": "cascadelake",
        "mattr": ["+avx512vnni", "-amx-int8"],
        "num-cores": 2,
    }
    assert spec.to_tvm().attrs["mcpu"] == "cascadelake"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("llvm -mcpu=skylake-avx513", "unknown CPU 'skylake-avx513'"),
        ("llvm", "-mcpu=NAME"),
        ("cuda -arch=sm_80", "only CPU targets"),
        ("llvm -mcpu=znver4 -mattr=avx512f", "start with + or -"),
        ("llvm -mcpu=znver4 -opt-level=3", "unknown option(s) -opt-level"),
        ("llvm mcpu", "expected -key=value"),
    ],
)
def test_bad_targets_name_the_flag(text, fragment):
    with pytest.raises(TargetError) as err:
        parse_target(text)
    assert "--target" in str(err.value) and fragment in str(err.value)


def test_vnni_feature_follows_the_cpu():
    assert not parse_target("llvm -mcpu=skylake-avx512").has_feature("avx512vnni")
    assert parse_target("llvm -mcpu=cascadelake").has_feature("avx512vnni")
    assert parse_target("llvm -mcpu=skylake-avx512 -mattr=+avx512vnni").has_feature("avx512vnni")


def test_native_adds_the_isa_features_cpuinfo_lists(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8 amx_tile\n")
    spec = native_target(cpuinfo)
    assert {"+avx512f", "+avx512vnni", "+amx-int8", "+amx-tile"} <= set(spec.mattr)
    assert spec.num_cores >= 1
    assert parse_target("native").mcpu == spec.mcpu
