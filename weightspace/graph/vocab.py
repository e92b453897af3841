"""Fixed vocabularies for node types, edge types and activations (stable integer codes).

The activation vocabulary (names, codes, which labels are nonlinearities) lives in
:mod:`weightspace.spec.vocab`; it is re-exported here for the graph builder."""
from __future__ import annotations

from ..spec.vocab import ACT, ACTIVATION_CODES, activation_code

NODE_TYPES = ("input", "hidden", "output", "norm", "join", "head", "position")
EDGE_TYPES = ("linear", "conv", "embedding", "norm", "affine", "residual", "concat", "gate", "activation",
              "attn_query", "attn_key", "attn_head", "attn_value", "rearrange", "stack", "recurrent_in", "recurrent")
ACTIVATIONS = ACTIVATION_CODES

NODE = {n: i for i, n in enumerate(NODE_TYPES)}
EDGE = {n: i for i, n in enumerate(EDGE_TYPES)}

__all__ = ["NODE_TYPES", "EDGE_TYPES", "ACTIVATIONS", "NODE", "EDGE", "ACT", "activation_code"]
