"""Each schedule rule on its own: which kernels it takes, and numerics against numpy on odd
shapes (sizes that are not multiples of the tile or vector width)."""

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from sparsec.passes import optimization_pipeline
from sparsec.schedules import SCHEDULE_RULE_ATTR
from sparsec.target import parse_target

TARGET = parse_target("native").to_tvm()


def _build(params, emit):
    """A Relax function of `params` (name -> (shape, constant or None)) whose body is `emit`."""
    builder = relax.BlockBuilder()
    inputs = [relax.Var(name, relax.TensorType(value.shape, "float32")) for name, value in params.items() if name.startswith("x")]
    consts = {name: relax.const(value) for name, value in params.items() if not name.startswith("x")}
    with builder.function("main", inputs):
        with builder.dataflow():
            out = builder.emit_output(emit(*inputs, **consts))
        builder.emit_func_output(out)
    return builder.get()


def _compile_and_run(mod, args):
    with TARGET:
        mod = optimization_pipeline(TARGET)(mod)
    rules = {gv.name_hint: str(f.attrs[SCHEDULE_RULE_ATTR]) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and SCHEDULE_RULE_ATTR in f.attrs}
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy(), rules


RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(("m", "k", "n"), [(1, 64, 48), (5, 33, 17), (128, 96, 80), (7, 16, 10)])
def test_dense_with_bias_relu(m, k, n):
    x, w, b = _rand(m, k), _rand(k, n), _rand(n)
    mod = _build({"x": x, "w": w, "b": b}, lambda x, w, b: relax.op.nn.relu(relax.op.add(relax.op.matmul(x, w), b)))
    out, rules = _compile_and_run(mod, [x])
    np.testing.assert_allclose(out, np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4)
    assert list(rules.values()) == ["F32Matmul"]


def test_constant_weight_is_repacked_into_panels_at_compile_time():
    """The weight reaches the kernel as [N / NR, K, NR] panels, computed while compiling: no
    repacking function is left in the module and the outputs do not change."""
    x, w, b = _rand(64, 96), _rand(96, 128), _rand(128)
    mod = _build({"x": x, "w": w, "b": b}, lambda x, w, b: relax.op.add(relax.op.matmul(x, w), b))
    with TARGET:
        mod = optimization_pipeline(TARGET)(mod)
    kernels = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert len(kernels) == 1, list(kernels)
    (name, kernel), = kernels.items()
    assert name.endswith("_prepacked") and str(kernel.attrs[SCHEDULE_RULE_ATTR]) == "F32Matmul"
    panels, k, panel_width = (int(d) for d in kernel.params[1].shape)
    assert (k, panels * panel_width) == (96, 128) and panels > 1
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), x @ w + b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("batch", "m", "k", "n"), [(12, 128, 64, 128), (3, 9, 7, 20)])
def test_batched_matmul_with_scale(batch, m, k, n):
    a, b = _rand(1, batch, m, k), _rand(1, batch, k, n)
    mod = _build({"xa": a, "xb": b}, lambda xa, xb: relax.op.multiply(relax.op.matmul(xa, xb), relax.const(0.125)))
    out, rules = _compile_and_run(mod, [a, b])
    np.testing.assert_allclose(out, (a @ b) * 0.125, rtol=1e-4, atol=1e-4)
    assert list(rules.values()) == ["F32Matmul"]
    assert not any(name.endswith("_prepacked") for name in rules)  # activations are not repacked


@pytest.mark.parametrize(
    ("channels_in", "channels_out", "size", "kernel", "stride", "padding", "groups"),
    [(3, 16, 15, 3, 2, 1, 1), (8, 12, 7, 1, 1, 0, 1), (16, 16, 9, 3, 1, 1, 16), (6, 10, 11, 5, 1, 2, 2)],
)
def test_conv2d_with_bias_relu(channels_in, channels_out, size, kernel, stride, padding, groups):
    x = _rand(1, channels_in, size, size)
    w = _rand(channels_out, channels_in // groups, kernel, kernel)
    b = _rand(1, channels_out, 1, 1)

    def emit(x, w, b):
        conv = relax.op.nn.conv2d(x, w, strides=stride, padding=padding, groups=groups)
        return relax.op.nn.relu(relax.op.add(conv, b))

    out, rules = _compile_and_run(_build({"x": x, "w": w, "b": b}, emit), [x])
    np.testing.assert_allclose(out, np.maximum(_reference_conv(x, w, stride, padding, groups) + b, 0), rtol=1e-4, atol=1e-4)
    assert "F32Conv2dNCHW" in rules.values()


def _reference_conv(x, w, stride, padding, groups):
    _, c_in, size, _ = x.shape
    c_out, c_per_group, kernel, _ = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_size = (size + 2 * padding - kernel) // stride + 1
    out = np.zeros((1, c_out, out_size, out_size), np.float32)
    out_per_group = c_out // groups
    for o in range(c_out):
        g = o // out_per_group
        window = padded[0, g * c_per_group : (g + 1) * c_per_group]
        for i in range(out_size):
            for j in range(out_size):
                patch = window[:, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
                out[0, o, i, j] = np.sum(patch * w[o])
    return out


# rows a multiple of the vector width take vector partial sums; odd widths fall back to DLight's rule
@pytest.mark.parametrize(
    ("shape", "rule"), [((4, 33), "Reduction"), ((6, 256), "RowReduction"), ((2, 3, 768), "RowReduction"), ((3, 96), "RowReduction"), ((5, 48), "RowReduction")]
)
def test_softmax_and_layer_norm_rules(shape, rule):
    x, gamma, beta = _rand(*shape), _rand(shape[-1]), _rand(shape[-1])
    mod = _build({"x": x, "gamma": gamma, "beta": beta}, lambda x, gamma, beta: relax.op.nn.softmax(relax.op.nn.layer_norm(x, gamma, beta, axes=[-1])))
    out, rules = _compile_and_run(mod, [x])
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * gamma + beta
    expected = np.exp(normed - normed.max(-1, keepdims=True))
    np.testing.assert_allclose(out, expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-5)
    assert set(rules.values()) == {rule}


def test_long_rows_keep_four_vectors_of_partial_sums():
    """A 768-wide layer norm sums into 4 x 16 partial sums (4 independent vector adds per step),
    then 16, then one."""
    x, gamma, beta = _rand(2, 768), _rand(768), _rand(768)
    mod = _build({"x": x, "gamma": gamma, "beta": beta}, lambda x, gamma, beta: relax.op.nn.layer_norm(x, gamma, beta, axes=[-1]))
    with TARGET:
        scheduled = optimization_pipeline(TARGET)(mod)
    (kernel,) = [f for _, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    partial_sums = re.findall(r"_rf(?:_1)? = T\.sblock_alloc_buffer\(\(T\.int64\(2\), T\.int64\((\d+)\)\)", kernel.script())
    assert sorted(partial_sums) == ["16", "16", "64", "64"]  # mean and variance
    out, _ = _compile_and_run(mod, [x])
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_injective_kernel_with_a_shared_bool_intermediate():
    x = _rand(3, 40)
    def emit(x):
        negative = relax.op.less(x, relax.const(0.0))  # bool, read by both selects
        first = relax.op.where(negative, relax.op.negative(x), x)
        second = relax.op.where(negative, relax.const(0.0), relax.op.multiply(x, relax.const(2.0)))
        return relax.op.add(first, second)

    out, rules = _compile_and_run(_build({"x": x}, emit), [x])
    np.testing.assert_allclose(out, np.abs(x) + np.where(x < 0, 0, 2 * x), rtol=1e-6)
    assert set(rules.values()) == {"Injective"}


# multiples of the vector width are copied in square tiles, other shapes element-wise
@pytest.mark.parametrize(("shape", "axes"), [((64, 48), [1, 0]), ((2, 32, 4, 16), [0, 2, 3, 1]), ((5, 7, 3), [2, 0, 1])])
def test_transposes(shape, axes):
    x = _rand(*shape)
    out, rules = _compile_and_run(_build({"x": x}, lambda x: relax.op.add(relax.op.permute_dims(x, axes), relax.const(1.0))), [x])
    np.testing.assert_array_equal(out, x.transpose(axes) + 1)
    assert set(rules.values()) == {"Injective"}


def test_byte_permute_is_copied_a_full_register_per_vector():
    """An int8 attention head split ([tokens, heads, dims] -> [heads, tokens, dims]) moves 64
    bytes per vector, not 16 (the fp32 width): 2.2-3x faster on BERT's shapes."""
    x = RNG.integers(0, 256, (128, 12, 64)).astype(np.uint8)
    builder = relax.BlockBuilder()
    var = relax.Var("x", relax.TensorType(x.shape, "uint8"))
    with builder.function("main", [var]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.permute_dims(var, [1, 0, 2]))
        builder.emit_func_output(out)
    mod = builder.get()
    with TARGET:
        scheduled = optimization_pipeline(TARGET)(mod)
    (kernel,) = [f for _, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert re.findall(r"T\.vectorized\((?:T\.int64\()?(\d+)", kernel.script()) == ["64"]
    out, rules = _compile_and_run(mod, [x])
    np.testing.assert_array_equal(out, x.transpose(1, 0, 2))
    assert set(rules.values()) == {"Injective"}
