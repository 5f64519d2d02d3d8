"""Graph passes and the ordered pipeline that lowers an imported Relax module to scheduled TIR."""

from .dense_to_bsr import BSROptions, DenseToBSR, LayerDecision
from .pipeline import optimization_pipeline

__all__ = ["BSROptions", "DenseToBSR", "LayerDecision", "optimization_pipeline"]
