"""Graph passes and the ordered pipeline that lowers an imported Relax module to scheduled TIR."""

from .pipeline import optimization_pipeline

__all__ = ["optimization_pipeline"]
