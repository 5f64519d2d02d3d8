import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sparsec import models
from sparsec.errors import ModelError
from sparsec.frontend import load_model, supported_ops
from sparsec.frontend.layers import weighted_layers
from sparsec.frontend.loader import parse_input_shapes


def _save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_input_shape_specs_parse():
    assert parse_input_shapes(["input_ids=1x128", "mask=4"]) == {"input_ids": (1, 128), "mask": (4,)}
    with pytest.raises(ModelError, match="--input-shape 'ids=1,128'"):
        parse_input_shapes(["ids=1,128"])


def test_dynamic_input_is_an_error_that_shows_the_flag(tmp_path):
    path = _save(models.mlp((8, 4), batch="batch"), tmp_path)
    with pytest.raises(ModelError, match=r"input 'input' has dynamic shape batchx8: fix it with --input-shape input=Nx8"):
        load_model(path)
    loaded = load_model(path, {"input": (3, 8)})
    assert loaded.inputs[0].shape == (3, 8) and loaded.inputs[0].dtype == "float32"


def test_input_shape_for_unknown_input_or_wrong_rank(tmp_path):
    path = _save(models.mlp((8, 4), batch="batch"), tmp_path)
    with pytest.raises(ModelError, match="no input 'x'"):
        load_model(path, {"x": (1, 8)})
    with pytest.raises(ModelError, match="has 2 dimensions, got 3"):
        load_model(path, {"input": (1, 1, 8)})
    with pytest.raises(ModelError, match="fixed at 8"):
        load_model(path, {"input": (1, 9)})


def test_unsupported_ops_are_reported_together_with_node_names(tmp_path):
    assert "Det" not in supported_ops(), "TVM now converts Det: pick another op for this test"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="fine"),
        helper.make_node("Det", ["a"], ["b"], name="first_bad"),
        helper.make_node("Custom", ["b"], ["y"], name="second_bad", domain="my.ops"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)],
        ir_version=8,
    )
    with pytest.raises(ModelError) as err:
        load_model(_save(model, tmp_path))
    message = str(err.value)
    assert "2 node(s)" in message and "first_bad (Det)" in message and "second_bad (my.ops.Custom)" in message


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_model(garbage)
    broken = models.mlp((4, 2))
    broken.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(ModelError, match="invalid ONNX model"):
        load_model(_save(broken, tmp_path, "broken.onnx"))


def test_layer_analysis_reports_shape_sparsity_and_macs(tmp_path):
    model = models.prune(models.mlp((64, 32, 10), batch=4, form="matmul"), 0.75)
    gemm = models.mlp((64, 32, 10), batch=4, form="gemm")
    layers = weighted_layers(load_model(_save(model, tmp_path)))
    assert [(layer.op, layer.weight_shape) for layer in layers] == [("MatMul", (64, 32)), ("MatMul", (32, 10))]
    assert layers[0].sparsity == pytest.approx(0.75, abs=1e-3)
    assert layers[0].macs == 4 * 64 * 32 and layers[1].macs == 4 * 32 * 10
    gemm_layers = weighted_layers(load_model(_save(gemm, tmp_path, "gemm.onnx")))
    assert gemm_layers[0].weight_shape == (32, 64) and gemm_layers[0].macs == 4 * 64 * 32
    assert gemm_layers[0].sparsity == 0.0


def test_block_pruning_zeroes_whole_blocks():
    weight = np.random.default_rng(0).standard_normal((16, 12)).astype(np.float32)
    pruned = models._prune_array(weight, 0.5, (4, 1))
    assert np.count_nonzero(pruned == 0) == weight.size // 2
    blocks = (pruned.reshape(4, 4, 12) == 0).all(axis=1) | (pruned.reshape(4, 4, 12) != 0).all(axis=1)
    assert blocks.all()


@pytest.mark.parametrize("form", ["gemm", "matmul"])
def test_prune_blocks_follow_the_layer_axes_not_the_storage(form):
    """(4, 1) blocks span 4 output channels of one reduction step, however the weight is stored."""
    pruned = models.prune(models.mlp((32, 16), form=form), 0.5, block=(4, 1))
    weight = next(onnx.numpy_helper.to_array(i) for i in pruned.graph.initializer if i.name == "fc0.weight")
    output_major = weight if form == "gemm" else weight.T  # [output, reduction]
    zero_blocks = (output_major.reshape(4, 4, 32) == 0).all(axis=1)
    assert zero_blocks.sum() == 4 * 32 // 2
    assert ((output_major.reshape(4, 4, 32) == 0).any(axis=1) == zero_blocks).all()
