"""What an artifact says about itself: embedded in the .so as the Relax function
`sparsec_metadata` (returning a JSON string), read back by the loader without TVM's compiler."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

METADATA_FUNCTION = "sparsec_metadata"
FORMAT = "sparsec-artifact"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    value_range: tuple[int, int] | None = None  # [low, high) of valid indices, table-indexing inputs

    @classmethod
    def from_json(cls, data: dict) -> "TensorInfo":
        value_range = tuple(data["value_range"]) if data.get("value_range") else None
        return cls(data["name"], tuple(data["shape"]), data["dtype"], value_range)

    def to_json(self) -> dict:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.value_range is not None:
            data["value_range"] = list(self.value_range)
        return data


@dataclass(frozen=True)
class ArtifactMetadata:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    target: dict = field(default_factory=dict)
    source: str = ""

    def to_json_string(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "target": self.target,
                "source": self.source,
            }
        )

    @classmethod
    def from_json_string(cls, text: str) -> "ArtifactMetadata":
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError("not a sparsec artifact")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"artifact format version {data.get('version')}, this loader reads {FORMAT_VERSION}")
        return cls(
            tuple(TensorInfo.from_json(t) for t in data["inputs"]),
            tuple(TensorInfo.from_json(t) for t in data["outputs"]),
            data.get("target", {}),
            data.get("source", ""),
        )
