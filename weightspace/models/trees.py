"""Soft tree ensembles (differentiable trees with sigmoid splits), whose spec is written by hand.

The tracer need not understand a tree: :meth:`SoftTreeEnsemble.weight_space_spec` builds the spec
through the public constructors (``WeightSpaceSpec.from_axes`` for the permutation of the trees,
:func:`~weightspace.symmetry.extended.with_symmetries` for the per-tree flips and splitting orders),
and ``WeightSpaceSpec.from_module(ensemble, x)`` returns it after checking it on ``x``.
The routing of every structure is one signed path matrix (see :mod:`weightspace.symmetry.trees`), so
all four kinds share one forward pass.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..symmetry.trees import TREE_KINDS, TreeStructure, path_matrix


class SoftTreeEnsemble(nn.Module):
    """``trees`` soft trees of ``depth`` summed: ``y = sum_t sum_l mu_tl(x) leaves[t, l]``.

    ``kind``: ``"perfect"`` (2^D - 1 splits, 2^D leaves), ``"oblivious"`` (one split per level shared
    by the level's nodes, 2^D leaves), ``"decision_list"`` (a chain of D splits, each sending its left
    mass to its own leaf, D + 1 leaves) or ``"modified_decision_list"`` (the same chain without the
    last leaf: D leaves, so no flip is possible at any node).
    Parameters: ``weight [T, N, in]``, ``bias [T, N]``, ``leaves [T, L, out]``; input ``[B, in]``,
    output ``[B, out]``. ``generator`` makes the initialization reproducible.
    """

    def __init__(self, in_features: int, out_features: int, trees: int = 256, depth: int = 2,
                 kind: str = "perfect", *, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if kind not in TREE_KINDS:
            raise ValueError(f"SoftTreeEnsemble: unknown kind {kind!r}; choose one of {', '.join(TREE_KINDS)}")
        if trees < 1 or in_features < 1 or out_features < 1:
            raise ValueError(f"SoftTreeEnsemble needs trees, in_features and out_features >= 1, got {trees}, "
                             f"{in_features}, {out_features}")
        self.in_features, self.out_features, self.trees, self.depth, self.kind = (in_features, out_features, trees,
                                                                                   depth, kind)
        paths = path_matrix(kind, depth)          # [N, L]; raises for depth < 1
        n, leaves = paths.shape
        dtype = dtype or torch.get_default_dtype()
        self.weight = nn.Parameter(torch.randn(trees, n, in_features, generator=generator, dtype=dtype)
                                   / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(trees, n, dtype=dtype))
        self.leaves = nn.Parameter(torch.randn(trees, leaves, out_features, generator=generator, dtype=dtype)
                                   / math.sqrt(trees))
        # which leaves lie left / right of each node: log mu = logsigmoid(u) @ left + logsigmoid(-u) @ right
        self.register_buffer("left", (paths == 1).to(dtype), persistent=False)
        self.register_buffer("right", (paths == -1).to(dtype), persistent=False)

    def structure(self) -> TreeStructure:
        return TreeStructure("trees", self.kind, self.depth, self.trees, "weight", "bias", "leaves")

    def splits(self, x: torch.Tensor) -> torch.Tensor:
        """Split values ``u [B, T, N]``."""
        return torch.einsum("bf,tnf->btn", x, self.weight) + self.bias

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Leaf probabilities ``mu [B, T, L]`` (each tree's sum to 1 except a modified decision list's)."""
        u = self.splits(x)
        logsig = torch.nn.functional.logsigmoid
        return (logsig(u) @ self.left.to(u.dtype) + logsig(-u) @ self.right.to(u.dtype)).exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btl,tlc->bc", self.routing(x), self.leaves)

    def weight_space_spec(self):
        """The spec: group ``"trees"`` permutes axis 0 of every tensor; the ``"tree"`` kind flips
        subtrees and reorders the splits of oblivious trees (the decision lists' single flip, or none)."""
        from ..spec.spec import WeightSpaceSpec
        from ..symmetry.extended import with_symmetries

        base = WeightSpaceSpec.from_axes({"weight": ("trees", None, None), "bias": ("trees", None),
                                          "leaves": ("trees", None, None)}, self.state_dict())
        return with_symmetries(base, self.structure())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, trees={self.trees}, "
                f"depth={self.depth}, kind={self.kind!r}")
