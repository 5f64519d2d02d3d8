"""Generate the benchmark models from scratch (no downloads): a BERT-base encoder and a
784-2048-2048-10 MLP, each dense, magnitude-pruned at 80/90/95% unstructured, at 90% in 4-wide
blocks along either axis and at 95% in 4x1 blocks, in fp32 and as static QDQ int8
(onnxruntime.quantization).

    python benchmarks/make_models.py --out /tmp/sparsec-bench/models [--only bert_base] [--no-int8]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import onnx

from sparsec import models

BASE_MODELS = {
    "bert_base": lambda: models.transformer_encoder(models.BERT_BASE, seq=128, batch=1),
    "mlp": lambda: models.mlp((784, 2048, 2048, 10), batch="batch"),
}


@dataclass(frozen=True)
class Variant:
    name: str
    sparsity: float
    block: tuple[int, int]  # (along output, along reduction)


VARIANTS = (
    Variant("dense", 0.0, (1, 1)),
    Variant("unstructured80", 0.80, (1, 1)),
    Variant("unstructured90", 0.90, (1, 1)),
    Variant("unstructured95", 0.95, (1, 1)),
    Variant("block4x1_90", 0.90, (4, 1)),
    Variant("block1x4_90", 0.90, (1, 4)),
    Variant("block4x1_95", 0.95, (4, 1)),
)
PRECISIONS = ("fp32", "int8")
CALIBRATION_SAMPLES = 8


def model_path(out: Path, base: str, variant: Variant, precision: str) -> Path:
    return out / f"{base}_{variant.name}_{precision}.onnx"


def generate(out: Path, bases: list[str], int8: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for base in bases:
        dense = BASE_MODELS[base]()
        for variant in VARIANTS:
            fp32_path = model_path(out, base, variant, "fp32")
            if not fp32_path.exists():
                pruned = models.prune(dense, variant.sparsity, variant.block) if variant.sparsity else dense
                onnx.save(pruned, str(fp32_path))
            written.append(fp32_path)
            int8_path = model_path(out, base, variant, "int8")
            if int8 and not int8_path.exists():
                models.quantize_qdq(fp32_path, int8_path, CALIBRATION_SAMPLES)
            if int8:
                written.append(int8_path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sparsec-bench/models"))
    parser.add_argument("--only", action="append", choices=sorted(BASE_MODELS), help="generate only this base model")
    parser.add_argument("--no-int8", action="store_true", help="skip the QDQ int8 variants")
    args = parser.parse_args()
    for path in generate(args.out, args.only or sorted(BASE_MODELS), not args.no_int8):
        print(path)
