"""Write a compiled module as one self-contained .so, metadata inside, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tvm
from tvm import relax

from .metadata import METADATA_FUNCTION, ArtifactMetadata


def attach_metadata(mod: tvm.IRModule, metadata: ArtifactMetadata) -> tvm.IRModule:
    """Add a Relax function returning the metadata JSON, so it travels inside the artifact."""
    builder = relax.BlockBuilder(mod)
    with builder.function(METADATA_FUNCTION, []):
        builder.emit_func_output(tvm.ir.StringImm(metadata.to_json_string()))
    return builder.get()


def export_atomically(executable, output: Path) -> None:
    """export_library into a temporary file beside `output`, then rename it into place: an
    interrupted or failed export leaves no partial artifact."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.so", dir=output.parent)
    os.close(fd)
    try:
        executable.export_library(tmp_name)
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
