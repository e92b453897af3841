"""Graph metanetworks on parameter graphs (``ws.to_graph``): NG-GNN, NG-T, GMN and ScaleGMN.

``NGGNN``, ``NGT`` and ``GMN`` are permutation equivariant by construction (message passing on the
graph); ``ScaleGMN`` adds exact invariance / equivariance to the spec's positive scalings and sign
flips by canonicalizing the weights first (:func:`canonicalize`).
"""
from .encode import EdgeEncoder, NodeEncoder
from .layers import GMNLayer, NGGNNLayer, RelationalAttention
from .models import GMN, NGGNN, NGT, GraphMetanet
from .readout import EquivariantHead, InvariantReadout
from .scale import ScaleGMN, canonicalize

__all__ = ["NGGNN", "NGT", "GMN", "ScaleGMN", "GraphMetanet", "canonicalize", "NodeEncoder", "EdgeEncoder",
           "NGGNNLayer", "GMNLayer", "RelationalAttention", "InvariantReadout", "EquivariantHead"]
