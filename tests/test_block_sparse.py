"""Pruned layers as BSR kernels: kernel numerics on edge-case weights for every block shape and
both loop orders, the fused epilogue, the per-layer decision, and pruned models end to end."""

import math
import re

import numpy as np
import onnx
import pytest
import tvm
from conftest import TARGET, assert_close_relative, random_feeds
from onnx import TensorProto, helper, numpy_helper
from onnx_zoo import light_model, onnxruntime_outputs
from tvm import relax

import sparsec
from sparsec import models
from sparsec.passes import BSROptions, DenseToBSR, optimization_pipeline
from sparsec.passes.block_sparsity import block_density, plan_layer
from sparsec.schedules.f32_csr_matvec import CSRShape, csr_matvec_kernel, pack_padded_csr
from sparsec.target import parse_target

TVM_TARGET = parse_target(TARGET).to_tvm()
RNG = np.random.default_rng(0)


def _dense_layer(weight_kn: np.ndarray, bias: np.ndarray, m: int, relu: bool):
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, weight_kn.shape[0]), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit(relax.op.matmul(x, relax.const(weight_kn)))
            y = builder.emit(relax.op.add(y, relax.const(bias)))
            if relu:
                y = builder.emit(relax.op.nn.relu(y))
            out = builder.emit_output(y)
        builder.emit_func_output(out)
    return builder.get()


def _run(mod, x, options):
    sparse = DenseToBSR(options)
    with TVM_TARGET:
        mod = optimization_pipeline(TVM_TARGET, sparse)(mod)
    kernels = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    vm = relax.VirtualMachine(tvm.compile(mod, TVM_TARGET), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), kernels, sparse.decisions


def _weight(k, n, block, pattern):
    """[K, N] weight pruned in (output, reduction) blocks, with some fully empty block rows."""
    rows, cols = block
    w = RNG.standard_normal((k, n)).astype(np.float32)
    if pattern == "dense":
        return w
    if pattern == "empty":
        return np.zeros_like(w)
    keep = RNG.random((n // rows, k // cols)) < 0.15
    keep[: max(1, keep.shape[0] // 4)] = False  # empty block rows: those outputs are bias only
    mask = np.repeat(np.repeat(keep, rows, axis=0), cols, axis=1).T
    return np.where(mask, w, 0).astype(np.float32)


@pytest.mark.parametrize("block", [(16, 1), (8, 1), (4, 1), (4, 4), (1, 4), (1, 1)])
@pytest.mark.parametrize("m", [1, 6, 48])
@pytest.mark.parametrize("pattern", ["pruned", "dense", "empty"])
def test_bsr_kernels_match_numpy(block, m, pattern):
    k, n = 64, 48
    weight, bias = _weight(k, n, block, pattern), RNG.standard_normal(n).astype(np.float32)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    out, kernels, decisions = _run(_dense_layer(weight, bias, m, relu=True), x, BSROptions(0.0, block))
    np.testing.assert_allclose(out, np.maximum(x @ weight + bias, 0), rtol=1e-5, atol=1e-5)
    (decision,) = decisions
    assert decision.plan.sparse and decision.plan.block == block
    bsr_kernels = [name for name in kernels if name.startswith("bsr_")]
    assert len(bsr_kernels) == 1 and bsr_kernels[0].startswith(f"bsr_{decision.plan.loop_order}_{block[0]}x{block[1]}")
    # bias and ReLU run inside the BSR kernel: no other kernel touches the output
    assert not [name for name in kernels if not name.startswith("bsr_") and ("add" in name or "relu" in name or "matmul" in name)]


@pytest.mark.parametrize("pattern", ["pruned", "dense", "empty"])
@pytest.mark.parametrize("residual", [False, True])
def test_gather_kernel_matches_numpy(pattern, residual):
    n, k = 37, 50  # rows of every length mod 16, K not a multiple of anything
    weight_nk = _weight(k, n, (1, 1), pattern).T.copy()
    x, bias, skip = (RNG.standard_normal(shape).astype(np.float32) for shape in ((1, k), (n,), (1, n)))
    data, indices, indptr = pack_padded_csr(weight_nk)
    assert not np.any(np.diff(indptr) % 16)
    func = csr_matvec_kernel(CSRShape(1, k, n, data.size), "relu", residual).with_attr("global_symbol", "main")
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=TVM_TARGET)
    args = [x, data, indices, indptr, bias, *([skip] if residual else []), np.zeros((1, n), np.float32)]
    buffers = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*buffers)
    expected = np.maximum(x @ weight_nk.T + bias, 0) + (skip if residual else 0)
    np.testing.assert_allclose(buffers[-1].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_batch_one_unstructured_layers_take_the_gather_kernel():
    weight_nk = _weight(2048, 2048, (1, 1), "pruned").T.copy()
    plan = plan_layer(weight_nk, m=1)
    assert plan.sparse and plan.loop_order == "gather" and plan.block == (1, 1)
    assert plan_layer(weight_nk, m=64).loop_order == "columns"  # the gather is for batch 1 only


def _feed_forward_block(w_up: np.ndarray, w_down: np.ndarray, m: int):
    """x -> matmul + bias -> GELU (the erf formula PyTorch exports) -> matmul + bias -> + x."""
    hidden = w_up.shape[0]
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, m, hidden), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            up = builder.emit(relax.op.add(builder.emit(relax.op.matmul(x, relax.const(w_up))), relax.const(np.full(w_up.shape[1], 0.1, np.float32))))
            erf = builder.emit(relax.op.erf(builder.emit(relax.op.divide(up, relax.const(np.float32(math.sqrt(2.0)))))))
            times_x = builder.emit(relax.op.multiply(up, builder.emit(relax.op.add(erf, relax.const(np.float32(1.0))))))
            gelu = builder.emit(relax.op.multiply(times_x, relax.const(np.float32(0.5))))
            down = builder.emit(relax.op.add(builder.emit(relax.op.matmul(gelu, relax.const(w_down))), relax.const(np.full(hidden, -0.2, np.float32))))
            out = builder.emit_output(relax.op.add(x, down))
        builder.emit_func_output(out)
    return builder.get()


@pytest.mark.parametrize("m", [2, 64])
def test_gelu_and_residual_fuse_into_the_sparse_kernels(m):
    w_up, w_down = _weight(256, 512, (4, 1), "pruned"), _weight(512, 256, (4, 1), "pruned")
    x = RNG.standard_normal((1, m, 256)).astype(np.float32)
    out, kernels, decisions = _run(_feed_forward_block(w_up, w_down, m), x, BSROptions(0.0, (4, 1)))
    up = x @ w_up + 0.1
    gelu = 0.5 * up * (1 + np.vectorize(math.erf)(up / math.sqrt(2.0)))
    assert_close_relative(out, x + gelu @ w_down - 0.2, 1e-5)
    # bias, GELU and the residual add run on the register tiles: besides the two kernels only
    # reshapes (views at build time) and, for the columns order, x's own transpose remain
    kernels = [name for name in kernels if not re.fullmatch(r"(fused_)?(reshape\d*_?)+", name)]
    orders = [d.plan.loop_order for d in decisions]
    transposes = ["fused_reshape_transpose"] if orders[0] == "columns" else []
    # columns -> columns: the up layer writes x^T for the down layer, no transpose between them
    up_suffix = "_gelu_nm" if orders == ["columns", "columns"] else "_gelu"
    assert sorted(kernels) == sorted([f"bsr_{orders[0]}_4x1{up_suffix}", f"bsr_{orders[1]}_4x1_residual", *transposes])
    if m >= 16:
        assert orders == ["columns", "columns"]


def test_block_shape_follows_the_zero_pattern():
    weight_nk = _weight(768, 768, (4, 1), "pruned").T.copy()
    assert block_density(weight_nk, (4, 1)) < 0.2 < block_density(weight_nk, (16, 1))
    plan = plan_layer(weight_nk, m=128)
    assert plan.sparse and plan.block == (4, 1) and plan.estimated_speedup > 2
    rows_pruned = _weight(768, 768, (16, 1), "pruned").T.copy()
    assert plan_layer(rows_pruned, m=128).block == (16, 1)
    assert plan_layer(rows_pruned, m=1).loop_order == "rows"  # no transpose for a single row
    # a forced narrow block at batch 1: the columns order's vectors along M would be one lane wide
    assert plan_layer(weight_nk, m=1, sparsity_threshold=0.0, block=(4, 1)).loop_order == "rows"


def test_layer_below_the_threshold_stays_dense(tmp_path):
    model = models.prune(models.mlp((64, 128, 32), batch=8), 0.5, (4, 1))
    onnx.save(model, str(tmp_path / "half.onnx"))
    forced_dense = sparsec.compile(tmp_path / "half.onnx", tmp_path / "a.so", target=TARGET, sparsity_threshold=0.8)
    assert [d.plan.sparse for d in forced_dense.layers] == [False, False]
    assert "F32BSRRows" not in forced_dense.schedules.values() and "F32BSRColumns" not in forced_dense.schedules.values()
    dense = models.mlp((64, 128, 32), batch=8)  # no zeros at all: the cost model keeps it dense
    onnx.save(dense, str(tmp_path / "dense.onnx"))
    assert not any(d.plan.sparse for d in sparsec.compile(tmp_path / "dense.onnx", tmp_path / "b.so", target=TARGET).layers)


@pytest.mark.parametrize(("form", "batch", "block"), [("gemm", 1, (4, 1)), ("matmul", 64, (1, 1)), ("gemm", 64, (1, 4))])
def test_pruned_mlp_matches_onnxruntime(compile_onnx, form, batch, block):
    model = models.prune(models.mlp((128, 256, 256, 16), batch=batch, form=form), 0.9, block)
    compiled, result = compile_onnx(model, f"pruned_{form}")
    assert sum(d.plan.sparse for d in result.layers) >= 2
    feeds = random_feeds(compiled)
    assert_close_relative(compiled.run(None, feeds)[0], onnxruntime_outputs(model, feeds)[0])


def test_pruned_transformer_encoder_matches_onnxruntime(compile_onnx):
    config = models.EncoderConfig(layers=2, hidden=64, heads=4, ffn=256, vocab=100, max_positions=64)
    model = models.prune(models.transformer_encoder(config, seq=32), 0.9)
    compiled, result = compile_onnx(model, "pruned_encoder", sparsity_threshold=0.5)
    assert sum(d.plan.sparse for d in result.layers) == 12  # q, k, v, out, up, down per layer
    feeds = random_feeds(compiled, vocab=config.vocab)
    assert_close_relative(compiled.run(None, feeds)[0], onnxruntime_outputs(model, feeds)[0])


def test_sparse_and_repacked_dense_layers_in_one_model(compile_onnx):
    """A pruned layer (BSR kernel) beside a dense one whose weight is repacked at compile time."""
    dense = models.mlp((128, 256, 64), batch=16)
    model = models.prune(dense, 0.9, (4, 1))
    kept = next(i for i in dense.graph.initializer if i.name == "fc1.weight")
    next(i for i in model.graph.initializer if i.name == "fc1.weight").CopyFrom(kept)
    compiled, result = compile_onnx(model, "half_pruned")
    assert [d.plan.sparse for d in result.layers] == [True, False]
    assert any(name.endswith("_prepacked") for name in result.schedules), result.schedules
    feeds = random_feeds(compiled)
    assert_close_relative(compiled.run(None, feeds)[0], onnxruntime_outputs(model, feeds)[0])


def _pointwise_conv_block(channels: int, hidden: int, size: int, batch: int) -> onnx.ModelProto:
    """x -> Conv1x1 + bias -> Relu -> Conv1x1 + bias -> + x, as a MobileNet/ResNet block exports."""
    def init(name, shape):
        return numpy_helper.from_array((RNG.standard_normal(shape) / np.sqrt(shape[1] if len(shape) > 1 else 1)).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="expand"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="project"),
        helper.make_node("Add", ["c2", "x"], ["y"], name="residual"),
    ]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, channels, size, size]) for name in ("x", "y")]
    weights = [init("w1", (hidden, channels, 1, 1)), init("b1", (hidden,)), init("w2", (channels, hidden, 1, 1)), init("b2", (channels,))]
    graph = helper.make_graph(nodes, "pointwise_block", io[:1], io[1:], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("batch", [1, 2])
def test_pointwise_convolutions_become_bsr_with_fused_epilogues(compile_onnx, batch):
    model = models.prune(_pointwise_conv_block(32, 96, 7, batch), 0.9, (4, 1))
    compiled, result = compile_onnx(model, f"pointwise_b{batch}")
    assert [d.plan.sparse for d in result.layers] == [True, True]
    # bias + ReLU and bias + residual run inside the kernels, written straight in NCHW (channels-major)
    bsr = sorted(name for name, rule in result.schedules.items() if rule == "F32BSRColumns")
    assert bsr == ["bsr_columns_4x1_relu_nm", "bsr_columns_4x1_residual_nm"]
    # `inspect` shows the same choice before compiling
    inspected = sparsec.inspect(result.output.with_suffix(".onnx"))
    assert [layer.kernel for layer in inspected] == [f"bsr {d.plan.block[0]}x{d.plan.block[1]} columns" for d in result.layers]
    assert "F32Conv2dNCHW" not in result.schedules.values()
    feeds = random_feeds(compiled)
    assert_close_relative(compiled.run(None, feeds)[0], onnxruntime_outputs(model, feeds)[0])


def test_pruned_squeezenet_matches_onnxruntime(compile_onnx):
    model = models.prune(light_model("squeezenet"), 0.9, (4, 1))
    compiled, result = compile_onnx(model, "pruned_squeezenet")
    assert sum(d.plan.sparse for d in result.layers) >= 10  # the squeeze and 1x1 expand convolutions
    feeds = random_feeds(compiled)
    assert_close_relative(compiled.run(None, feeds)[0], onnxruntime_outputs(model, feeds)[0])


def test_sparse_artifact_drops_the_dense_weights(tmp_path):
    dense = models.mlp((512, 1024, 1024, 10), batch=4)
    pruned = models.prune(dense, 0.9, (16, 1))
    sizes = {}
    for name, model in (("dense", dense), ("pruned", pruned)):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        sizes[name] = sparsec.compile(tmp_path / f"{name}.onnx", tmp_path / f"{name}.so", target=TARGET).output.stat().st_size
    # 90% of the two big layers' 6 MB goes: well under half the dense artifact
    assert sizes["pruned"] < 0.4 * sizes["dense"], sizes
