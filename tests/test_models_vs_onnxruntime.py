"""Real model graphs compiled and compared with onnxruntime to 1e-4 relative."""

import pytest
from onnx import TensorProto, helper
from conftest import assert_close_relative, random_feeds
from onnx_zoo import light_model, onnxruntime_outputs

from sparsec import models

TINY_ENCODER = models.EncoderConfig(layers=2, hidden=64, heads=4, ffn=256, vocab=100, max_positions=64)


def _check(compile_onnx, onnx_model, name, **kwargs):
    compiled, result = compile_onnx(onnx_model, name, **kwargs)
    feeds = random_feeds(compiled, vocab=TINY_ENCODER.vocab)
    expected = onnxruntime_outputs(onnx_model, feeds)
    actual = compiled.run(None, feeds)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert_close_relative(got, want)
    return result


@pytest.mark.parametrize("form", ["gemm", "matmul"])
def test_mlp(compile_onnx, form):
    result = _check(compile_onnx, models.mlp((96, 256, 128, 10), batch=4, form=form), f"mlp_{form}")
    matmuls = [name for name, rule in result.schedules.items() if "matmul" in name]
    assert len(matmuls) == 3 and all(result.schedules[name] == "F32Matmul" for name in matmuls)
    # Gemm's transposed weights are folded at compile time: no transpose kernel remains.
    assert not any("transpose" in name or "permute" in name for name in result.schedules)


def test_mlp_batch_one_with_odd_sizes(compile_onnx):
    _check(compile_onnx, models.mlp((37, 100, 13), batch=1), "mlp_odd")


def test_transformer_encoder(compile_onnx):
    result = _check(compile_onnx, models.transformer_encoder(TINY_ENCODER, seq=32), "encoder")
    rules = set(result.schedules.values())
    assert {"F32Matmul", "RowReduction"} <= rules  # dense + attention matmuls; softmax and layer norm
    assert any("softmax" in name for name, rule in result.schedules.items() if rule == "RowReduction")
    assert any("layer_norm" in name for name, rule in result.schedules.items() if rule == "RowReduction")


def test_transformer_encoder_with_dynamic_dims_fixed_by_input_shape(compile_onnx):
    model = models.transformer_encoder(TINY_ENCODER, seq="seq", batch="batch")
    compiled, _ = compile_onnx(model, "encoder_dynamic", input_shapes=["input_ids=2x24"])
    assert compiled.inputs[0].shape == (2, 24)
    feeds = random_feeds(compiled, vocab=TINY_ENCODER.vocab)
    assert_close_relative(compiled.run(None, feeds)[0], onnxruntime_outputs(model, feeds)[0])


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "densenet121"])
def test_onnx_light_cnn(compile_onnx, name):
    result = _check(compile_onnx, light_model(name), name)
    assert "F32Conv2dNCHW" in set(result.schedules.values())


def test_multiple_outputs_keep_their_names_and_order(compile_onnx):
    model = models.mlp((16, 8, 4), batch=2)
    hidden = model.graph.node[1].output[0]  # the ReLU between the two layers
    final = model.graph.output[0].name
    model.graph.output.insert(0, helper.make_tensor_value_info(hidden, TensorProto.FLOAT, [2, 8]))
    compiled, _ = compile_onnx(model, "two_outputs")
    assert [o.name for o in compiled.outputs] == [hidden, final]
    assert [o.shape for o in compiled.outputs] == [(2, 8), (2, 4)]
    feeds = random_feeds(compiled)
    expected = onnxruntime_outputs(model, feeds)
    for got, want in zip(compiled.run(None, feeds), expected):
        assert_close_relative(got, want)
    (only_final,) = compiled.run([final], feeds)
    assert_close_relative(only_final, expected[1])
