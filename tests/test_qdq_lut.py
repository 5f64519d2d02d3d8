"""Element-wise chains between quantized tensors become 256-entry lookup tables
(passes/qdq_lut.py): exact against onnx's reference evaluator, which applies every
QuantizeLinear/DequantizeLinear of the chain as the ONNX spec says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import random_feeds
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_zoo import onnxruntime_outputs, onnxruntime_quantized_encoder, reference_outputs

from sparsec import models

SHAPE = [2, 64, 48]
OUT_SCALE = 0.012


class _QDQGraph:
    """A small ONNX graph written the way onnxruntime.quantization writes one: a
    QuantizeLinear/DequantizeLinear pair after every op."""

    def __init__(self, dtype: int):
        self.dtype, self.nodes, self.initializers = dtype, [], []
        self.signed = dtype == TensorProto.INT8

    def qdq(self, name: str, scale: float, zero_point: int) -> str:
        zero_point = zero_point - 128 if self.signed else zero_point
        self.initializers += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"), helper.make_tensor(f"{name}_z", self.dtype, [], [zero_point])]
        self.nodes += [
            helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]),
        ]
        return f"{name}_dq"

    def constant(self, name: str, value, quantized: bool) -> str:
        value = np.asarray(value, np.float32)
        if not quantized:
            self.initializers.append(numpy_helper.from_array(value, name))
            return name
        self.initializers += [
            numpy_helper.from_array(np.full(value.shape, 255, np.uint8), f"{name}_q"),
            numpy_helper.from_array(np.array(value.max() / 255, np.float32), f"{name}_s"),
            helper.make_tensor(f"{name}_z", TensorProto.UINT8, [], [0]),
        ]
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name]))
        return name

    def op(self, op_type: str, inputs: list[str], name: str) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name]))
        return name

    def model(self, inputs: list[str], output: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "qdq_chain",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, SHAPE) for name in inputs],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, SHAPE)],
            self.initializers,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _gelu_chain(dtype=TensorProto.UINT8, quantized_constants=False, bias=None, second_input=False) -> onnx.ModelProto:
    """x -> Q/DQ [-> + bias or + y] -> GELU as x * (1 + erf(x / sqrt 2)) * 0.5, Q/DQ after each op."""
    g = _QDQGraph(dtype)
    x = g.qdq("x", 0.03, 120)
    if bias is not None:
        x = g.qdq(g.op("Add", [x, g.constant("bias", bias, False)], "biased"), 0.035, 118)
    if second_input:
        # scales with no round ratios: with 0.03, 0.02 and 0.04 the exact sums land on rounding ties,
        # which the order of the float operations (FMA or not) decides
        x = g.qdq(g.op("Add", [x, g.qdq("y", 0.0217, 128)], "sum"), 0.0413, 118)
    erf = g.qdq(g.op("Erf", [g.op("Div", [x, g.constant("sqrt2", 2**0.5, False)], "div")], "erf"), 0.0078, 127)
    one_plus = g.qdq(g.op("Add", [erf, g.constant("one", 1.0, quantized_constants)], "add"), 0.0079, 0)
    product = g.qdq(g.op("Mul", [x, one_plus], "mul"), 0.025, 15)
    gelu = g.qdq(g.op("Mul", [product, g.constant("half", 0.5, quantized_constants)], "gelu"), OUT_SCALE, 15)
    return g.model(["x", "y"] if second_input else ["x"], gelu)


def _lookup_kernels(result) -> int:
    return sum(rule.startswith("U8Lookup") for rule in result.schedules.values())


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {i.name: rng.normal(0, 1.5, SHAPE).astype(np.float32) for i in model.graph.input}


@pytest.mark.parametrize("dtype", [TensorProto.UINT8, TensorProto.INT8])
@pytest.mark.parametrize("quantized_constants", [False, True])
def test_gelu_chain_is_one_table_and_exact(compile_onnx, dtype, quantized_constants):
    model = _gelu_chain(dtype, quantized_constants)
    compiled, result = compile_onnx(model)
    assert _lookup_kernels(result) == 1
    feeds = _feeds(model)
    ours = compiled.run(None, feeds)[0]
    np.testing.assert_array_equal(ours, ReferenceEvaluator(model).run(None, feeds)[0])
    # onnxruntime runs the Add/Mul with quantized constants as its own QLinearAdd/QLinearMul,
    # whose roundings differ from the spec's by at most one step
    assert np.abs(ours - onnxruntime_outputs(model, feeds)[0]).max() <= OUT_SCALE * 1.01


HOST_HAS_VBMI = "avx512vbmi" in Path("/proc/cpuinfo").read_text().split()


@pytest.mark.parametrize(("cpu", "kernel"), [("skylake-avx512", "U8Lookup"), ("icelake-server", "U8LookupVBMI")])
def test_lookup_path_follows_the_target(compile_onnx, cpu, kernel):
    """AVX-512 VBMI targets look up 64 bytes per vpermi2b pair, others one byte at a time."""
    model = _gelu_chain(TensorProto.INT8)
    compiled, result = compile_onnx(model, cpu, target=f"llvm -mcpu={cpu}")
    assert [rule for rule in result.schedules.values() if rule.startswith("U8Lookup")] == [kernel]
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(result.output)], capture_output=True, text=True, check=True).stdout
    assert ("vpermi2b" in disassembly or "vpermt2b" in disassembly) == (kernel == "U8LookupVBMI")
    if kernel == "U8LookupVBMI" and not HOST_HAS_VBMI:
        pytest.skip("this CPU cannot run AVX-512 VBMI code")
    feeds = _feeds(model)
    np.testing.assert_array_equal(compiled.run(None, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0])


@pytest.mark.parametrize("variant", ["per-channel bias", "two inputs"])
def test_a_chain_that_is_not_a_function_of_one_byte_keeps_its_bias_or_sum(compile_onnx, variant):
    """The table starts after the per-channel bias (or the sum of two tensors): their outputs
    are the source byte; the rest is still one table, and the results stay exact."""
    bias = np.linspace(-0.5, 0.5, SHAPE[-1]) if variant == "per-channel bias" else None
    model = _gelu_chain(bias=bias, second_input=variant == "two inputs")
    compiled, result = compile_onnx(model)
    assert _lookup_kernels(result) == 1
    feeds = _feeds(model)
    np.testing.assert_array_equal(compiled.run(None, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0])


def test_quantized_encoder_uses_tables_and_matches_the_reference(compile_onnx, tmp_path):
    """A BERT-shaped encoder quantized by onnxruntime.quantization: its GELU and the attention
    scaling become tables, and the whole model still follows the QDQ spec."""
    config = models.EncoderConfig(layers=1, hidden=64, heads=2, ffn=128, vocab=50, max_positions=32)
    model = onnxruntime_quantized_encoder(tmp_path, config)
    compiled, result = compile_onnx(model)
    assert _lookup_kernels(result) >= 2  # the GELU and the 1/sqrt(d) scaling of QK^T
    feeds = random_feeds(compiled, vocab=config.vocab)
    reference = reference_outputs(model, feeds)[0]
    ours = compiled.run(None, feeds)[0]
    assert np.abs(ours - reference).max() <= 1e-3 * np.abs(reference).max()
