"""Metanetworks: equivariant weight-space layers and models built from the spec.

``WeightSpaceFeatures`` (the spec plus ``name -> [B, C, *shape]``) flows between layers;
``EquivariantLinear`` is the full basis of permutation-equivariant linear maps of any traced spec
(heads, concatenations, flattened conv channels included); ``InvariantPool`` pools to ``[B, F]``;
``UNF``, ``NFN`` (NP / HNP for MLPs and CNNs) and ``FlatMLP`` are models taking a ``WeightSpace``;
``NGGNN``, ``NGT``, ``GMN`` and ``ScaleGMN`` (``nn/graph/``) run on parameter graphs.
"""
from .features import WeightSpaceFeatures
from .linear import EquivariantLinear
from .models import UNF, FlatMLP
from .nfn import NFN, GaussianFourierFeatures, IOEmbedding, io_permutable
from .pointwise import ChannelNorm, FeatureDropout, Pointwise
from .pool import InvariantPool

__all__ = ["WeightSpaceFeatures", "EquivariantLinear", "InvariantPool", "Pointwise", "ChannelNorm", "FeatureDropout",
           "UNF", "FlatMLP", "NFN",
           "GaussianFourierFeatures", "IOEmbedding", "io_permutable",
           "NGGNN", "NGT", "GMN", "ScaleGMN", "GraphMetanet", "canonicalize"]

_GRAPH = ("NGGNN", "NGT", "GMN", "ScaleGMN", "GraphMetanet", "canonicalize")


def __getattr__(name: str):
    """The graph metanetworks load torch_geometric: import them on first use only."""
    if name in _GRAPH:
        from . import graph

        return getattr(graph, name)
    raise AttributeError(f"module 'weightspace.nn' has no attribute '{name}'")
