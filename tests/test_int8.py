"""QDQ models on integer kernels: the u8 x s8 kernels against numpy on odd shapes, QDQ graphs
(onnxruntime.quantization: Gemm and MatMul, per-tensor and per-channel weights, u8 and s8
activations) against onnxruntime within one output quantization step, and the instruction path
each target gets (vpdpbusd in the artifact for VNNI targets, none without)."""

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from conftest import TARGET, random_feeds
from onnx import numpy_helper
from onnx_zoo import onnxruntime_outputs

from sparsec import models
from sparsec.schedules.u8_lookup import u8_lookup_kernel
from sparsec.schedules.u8_regroup import regrouped_shape, regrouped_tile_rows, u8_regroup_kernel
from sparsec.schedules.u8s8_bsr_matmul import Int8BSRShape, pack_int8_bsr, u8s8_bsr_kernel
from sparsec.schedules.u8s8_matmul import Int8MatmulShape, PostBias, Requantize, pack_weight, u8s8_matmul_kernel
from sparsec.target import parse_target

RNG = np.random.default_rng(0)


def needs_host_feature(flag: str):
    return pytest.mark.skipif(flag not in Path("/proc/cpuinfo").read_text().split(), reason=f"this CPU lacks {flag}")


@pytest.mark.parametrize("vnni", [True, False])
@pytest.mark.parametrize(("m", "k", "n"), [(1, 64, 48), (6, 30, 20), (16, 128, 100)])
def test_u8s8_kernel_matches_numpy(vnni, m, k, n):
    shape = Int8MatmulShape(m, k, n)
    x = RNG.integers(0, 256, (m, k)).astype(np.uint8)
    w = RNG.integers(-128, 128, (n, k)).astype(np.int8)  # the full range: no 16-bit saturation allowed
    zero_point, x_scale = 131, 0.02
    w_scale, bias = RNG.uniform(1e-3, 1e-2, n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)

    def padded(a):
        return np.pad(a, (0, shape.padded_n - n)).astype(a.dtype)

    compensation = padded(zero_point * w.astype(np.int32).sum(axis=1)).astype(np.int32)
    x_in = np.pad(x, ((0, 0), (0, shape.padded_k - k))) if vnni else x
    args = [x_in, pack_weight(w, vnni), compensation, padded(x_scale * w_scale), padded(bias), np.zeros((m, n), np.float32)]
    func = u8s8_matmul_kernel(shape, vnni, "relu").with_attr("global_symbol", "main")
    target = parse_target(TARGET).to_tvm() if vnni else parse_target("llvm -mcpu=skylake-avx512").to_tvm()
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=target)
    buffers = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*buffers)
    exact = (x.astype(np.int64) - zero_point) @ w.T.astype(np.int64)
    np.testing.assert_allclose(buffers[-1].numpy(), np.maximum(exact * (x_scale * w_scale) + bias, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("post_bias", [None, PostBias(Requantize(0.7, -5, "int8"))])
@pytest.mark.parametrize("block_rows", [1, 4, 16])
@pytest.mark.parametrize("pattern", ["pruned", "dense", "empty"])
def test_u8s8_bsr_kernel_matches_numpy(block_rows, pattern, post_bias):
    m, k, n = 64, 96, 128  # 2 tiles of 32 regrouped rows; 1-row blocks: 16 groups of 8 in 8 parallel chunks of 2
    keep = RNG.random((n // block_rows, k // 4)) < {"pruned": 0.15, "dense": 1.0, "empty": 0.0}[pattern]
    keep[:2] = False  # empty block rows: bias only
    w = RNG.integers(-128, 128, (n, k)) * np.repeat(np.repeat(keep, block_rows, 0), 4, 1)
    w = w.astype(np.int8)
    x = RNG.integers(0, 256, (m, k)).astype(np.uint8)
    zero_point, x_scale, w_scale = 7, 0.05, RNG.uniform(1e-3, 1e-2, n).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    requantize = Requantize(0.5, 3, "uint8")
    data, indices, indptr = pack_int8_bsr(w, block_rows)
    func = u8s8_bsr_kernel(Int8BSRShape(m, k, n, block_rows, data.shape[0]), None, requantize, post_bias=post_bias)
    func = func.with_attr("global_symbol", "main")
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=parse_target(TARGET).to_tvm())
    grouped = _regrouped(x)
    compensation = (zero_point * w.astype(np.int32).sum(axis=1)).astype(np.int32)
    bias_after = RNG.standard_normal(n).astype(np.float32)
    biases = bias if post_bias is None else np.concatenate([bias, bias_after])
    out = np.zeros((m, n), np.uint8 if post_bias is None else np.int8)
    args = [grouped, data, indices, indptr, compensation, (x_scale * w_scale).astype(np.float32), biases, out]
    buffers = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*buffers)
    real = ((x.astype(np.int64) - zero_point) @ w.T.astype(np.int64)) * (x_scale * w_scale).astype(np.float32) + bias
    expected = np.clip(np.round(real.astype(np.float32) / np.float32(0.5)) + 3, 0, 255)
    if post_bias is not None:  # dequantize, add the second bias, quantize to int8
        expected = np.clip(np.round(((expected - 3) * np.float32(0.5) + bias_after) / np.float32(0.7)) - 5, -128, 127)
    assert np.abs(buffers[-1].numpy().astype(np.int32) - expected).max() <= 1  # float rounding ties


def _build(func):
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=parse_target(TARGET).to_tvm())


def _regrouped(x: np.ndarray) -> np.ndarray:
    """[M, K] as [M/T, K/4, T, 4]: the rows of each T-row tile, 4 bytes of K at a time."""
    m, k = x.shape
    tile = regrouped_tile_rows(m)
    return np.ascontiguousarray(x.reshape(m // tile, tile, k // 4, 4).transpose(0, 2, 1, 3))


@pytest.mark.parametrize(("m", "k"), [(16, 4), (48, 96), (64, 12)])
def test_regroup_kernel_matches_numpy(m, k):
    x = RNG.integers(0, 256, (m, k)).astype(np.uint8)
    buffers = [tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros(regrouped_shape(m, k), np.uint8))]
    _build(u8_regroup_kernel(m, k))["main"](*buffers)
    np.testing.assert_array_equal(buffers[1].numpy(), _regrouped(x))


@pytest.mark.parametrize("vbmi", [False, pytest.param(True, marks=needs_host_feature("avx512vbmi"))])
@pytest.mark.parametrize(("size", "dtype"), [(5, "int8"), (64 * 300 + 7, "uint8"), (3 * 16384 + 64, "int8")])
def test_lookup_kernel_matches_numpy(size, dtype, vbmi):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max + 1, size).astype(dtype)
    table = RNG.integers(0, 256, 256).astype(np.int32)
    buffers = [tvm.runtime.tensor(a) for a in (x, table, np.zeros(size, np.uint8))]
    _build(u8_lookup_kernel(size, dtype, "uint8", vbmi))["main"](*buffers)
    np.testing.assert_array_equal(buffers[2].numpy(), table[x.astype(np.int32) - info.min])


@pytest.mark.parametrize(
    ("form", "pruned_as", "block_rows"),
    [
        ("gemm", (1, 4), 1),  # the weights' own 1x4 pattern
        ("matmul", (1, 4), 1),
        ("gemm", (4, 1), 4),  # 4x1 blocks regrouped into 4x4 ones (a third of them stored at 90%)
    ],
)
def test_pruned_qdq_mlp_runs_bsr_int8_and_matches_onnxruntime(compile_onnx, tmp_path, form, pruned_as, block_rows):
    source, target = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(models.prune(models.mlp((128, 256, 256, 16), batch=32, form=form), 0.9, pruned_as), str(source))
    models.quantize_qdq(source, target)
    model = onnx.load(str(target))
    compiled, result = compile_onnx(model, "pruned_qdq_mlp")
    assert [d.path for d in result.int8_layers][:2] == ["vnni-bsr", "vnni-bsr"]
    assert all(d.plan.block_rows == block_rows for d in result.int8_layers[:2])
    if form == "matmul":  # the bias add after the output QuantizeLinear runs in the BSR kernel
        sparse_layers = sum(d.path == "vnni-bsr" for d in result.int8_layers)
        assert sum(name.startswith(f"u8s8_bsr_{block_rows}x4_requantize_bias") for name in result.schedules) == sparse_layers
    feeds = random_feeds(compiled)
    difference = np.abs(compiled.run(None, feeds)[0] - onnxruntime_outputs(model, feeds)[0]).max()
    assert difference <= _output_step(model) * 1.001, difference


def _output_step(model: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear that produces the graph's output."""
    producer = next(node for node in model.graph.node if node.output[0] == model.graph.output[0].name)
    assert producer.op_type == "DequantizeLinear"
    scales = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return float(scales[producer.input[1]])


def _qdq_mlp(tmp_path, form, per_channel, activations, batch=4):
    source, target = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(models.mlp((64, 128, 96, 16), batch=batch, form=form), str(source))
    models.quantize_qdq(source, target, per_channel=per_channel, activations=activations)
    return onnx.load(str(target))


@pytest.mark.parametrize("form", ["gemm", "matmul"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_qdq_mlp_matches_onnxruntime(compile_onnx, tmp_path, form, per_channel, activations):
    model = _qdq_mlp(tmp_path, form, per_channel, activations)
    compiled, result = compile_onnx(model, "qdq_mlp")
    assert [d.path for d in result.int8_layers] == ["vnni"] * 3  # the host (Zen 4) has VNNI
    # every layer's output QuantizeLinear runs in its kernel: the next layer reads bytes directly;
    # MatMul + Add's bias add between two QuantizeLinears (matmul -> Q -> DQ -> + b -> Q) too
    epilogue = "u8s8_matmul_vnni_requantize" + ("_bias" if form == "matmul" else "")
    assert sum(name.startswith(epilogue) for name in result.schedules) == 3
    feeds = random_feeds(compiled)
    difference = np.abs(compiled.run(None, feeds)[0] - onnxruntime_outputs(model, feeds)[0]).max()
    assert difference <= _output_step(model) * 1.001, difference


def _disassembly(path) -> str:
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True, check=True).stdout


def test_vnni_target_emits_vpdpbusd(compile_onnx, tmp_path):
    model = _qdq_mlp(tmp_path, "gemm", False, "uint8")
    _, result = compile_onnx(model, "cascadelake", target="llvm -mcpu=cascadelake")
    assert {d.path for d in result.int8_layers} == {"vnni"}
    assert "vpdpbusd" in _disassembly(result.output)


def test_target_without_vnni_takes_the_generic_integer_path(compile_onnx, tmp_path):
    model = _qdq_mlp(tmp_path, "matmul", True, "int8")
    compiled, result = compile_onnx(model, "skylake", target="llvm -mcpu=skylake-avx512")
    assert {d.path for d in result.int8_layers} == {"generic"}
    assert "vpdpbusd" not in _disassembly(result.output)
    feeds = random_feeds(compiled)
    difference = np.abs(compiled.run(None, feeds)[0] - onnxruntime_outputs(model, feeds)[0]).max()
    assert difference <= _output_step(model) * 1.001, difference


@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul_imports_onto_the_integer_kernel(compile_onnx, per_column):
    from onnx import TensorProto, helper

    k, n = 64, 48
    w = RNG.integers(-127, 128, (k, n)).astype(np.int8)
    w_scale = RNG.uniform(1e-3, 1e-2, n if per_column else 1).astype(np.float32).reshape(-1 if per_column else ())
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.03, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(120, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
    ]
    node = helper.make_node("QLinearMatMul", ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero"], ["y"], name="qmm")
    graph = helper.make_graph(
        [node], "qlinear", [helper.make_tensor_value_info("x", TensorProto.UINT8, [8, k])], [helper.make_tensor_value_info("y", TensorProto.UINT8, [8, n])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21 if per_column else 13)], ir_version=8)
    compiled, result = compile_onnx(model, "qlinear")
    assert [d.path for d in result.int8_layers] == ["vnni"]
    x = RNG.integers(0, 256, (8, k)).astype(np.uint8)
    difference = compiled.run(None, {"x": x})[0].astype(np.int32) - onnxruntime_outputs(model, {"x": x})[0].astype(np.int32)
    assert np.abs(difference).max() <= 1  # one quantization step
