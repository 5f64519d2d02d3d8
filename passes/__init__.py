"""Graph passes and the ordered pipeline that lowers an imported Relax module to scheduled TIR."""

from .dense_to_bsr import BSROptions, DenseToBSR, LayerDecision
from .pipeline import has_vnni, optimization_pipeline
from .qdq_to_int8 import Int8LayerDecision, QDQToInt8

__all__ = ["BSROptions", "DenseToBSR", "Int8LayerDecision", "LayerDecision", "QDQToInt8", "has_vnni", "optimization_pipeline"]
