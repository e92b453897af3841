"""Metanetworks: equivariant weight-space layers and models built from the spec.

``WeightSpaceFeatures`` (the spec plus ``name -> [B, C, *shape]``) flows between layers;
``EquivariantLinear`` is the full basis of permutation-equivariant linear maps of any traced spec
(heads, concatenations, flattened conv channels included); ``InvariantPool`` pools to ``[B, F]``;
``UNF``, ``NFN`` (NP / HNP for MLPs and CNNs) and ``FlatMLP`` are models taking a ``WeightSpace``.
"""
from .features import WeightSpaceFeatures
from .linear import EquivariantLinear
from .models import UNF, FlatMLP
from .nfn import NFN, GaussianFourierFeatures, IOEmbedding, io_permutable
from .pointwise import ChannelNorm, FeatureDropout, Pointwise
from .pool import InvariantPool

__all__ = ["WeightSpaceFeatures", "EquivariantLinear", "InvariantPool", "Pointwise", "ChannelNorm", "FeatureDropout",
           "UNF", "FlatMLP", "NFN",
           "GaussianFourierFeatures", "IOEmbedding", "io_permutable"]
