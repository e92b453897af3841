"""Function-preserving augmentation: a random element of the spec's symmetry group per network.

Design decisions:

* Each transform is one kind of the foundation's group elements: ``random_element(spec, generator,
  batch_size=B, kinds=(kind,))`` draws one element per network and ``act`` applies all of them in one
  batched gather / multiply per tensor. Nothing here knows an architecture: the spec says which
  neurons move together (residual streams, attention heads, concatenations) and which diagonal
  symmetries hold.
* A transform asked for a symmetry the spec does not list raises a :class:`SpecError` naming the
  symmetry and the activations the spec records, and pointing to the transform that does apply
  (RandomSignFlip on a ReLU network: use RandomScaling). Silently returning the input would make an
  ablation row mean nothing.
* ``RandomScaling`` draws log-uniform factors in ``[low, high]`` (the foundation's convention), so
  ``s`` and ``1/s`` are equally likely and the default ``[0.5, 2]`` is symmetric around 1.
* Only the requested kind is drawn; compose them (``Compose([RandomPermutation(), RandomSignFlip()])``)
  for the whole group. The element is kept on the CPU (a few integers per neuron) and moved to the
  weights' device.
"""
from __future__ import annotations

import torch

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..symmetry.element import random_element
from .base import Transform, as_range

__all__ = ["RandomPermutation", "RandomScaling", "RandomSignFlip"]


def _activations(spec: WeightSpaceSpec) -> str:
    acts = sorted({g.activation for g in spec.groups if g.activation})
    return ", ".join(acts) if acts else "none recorded"


def _act(w: WeightSpace, kind: str, generator: torch.Generator | None, **options) -> WeightSpace:
    g = random_element(w.spec, generator, batch_size=w.batch_size, kinds=(kind,), **options)
    return g.to(w.device).act(w)


class RandomPermutation(Transform):
    """Permute the hidden neurons of each network by its own uniformly random element of every
    permutation group of the spec (heads move whole, as the spec's head structure says).
    Keeps each network's function; raises :class:`SpecError` on a spec without permutation groups."""

    def forward(self, w, generator):
        if not w.spec.groups:
            raise SpecError("RandomPermutation: the spec lists no permutation group (no hidden neurons whose "
                            "order is free), so there is nothing to permute")
        return _act(w, "permutation", generator)


class RandomScaling(Transform):
    """Rescale neurons by positive factors, log-uniform in ``[low, high]``, one per neuron and
    network: writers multiplied by ``s``, readers by ``1/s``. Keeps each network's function where the
    spec lists a positive scaling (ReLU family, max pooling, linear maps); raises a
    :class:`SpecError` naming the missing symmetry otherwise."""

    def __init__(self, low: float = 0.5, high: float = 2.0):
        self.low, self.high = as_range((low, high), "(low, high)", minimum=0.0, open_minimum=True)

    def forward(self, w, generator):
        if not any(s.positive for s in w.spec.scalings):
            hint = ("use RandomSignFlip, the symmetry of odd activations" if any(s.sign for s in w.spec.scalings)
                    else "the spec lists no scaling symmetry of any kind")
            raise SpecError(f"RandomScaling: the spec lists no positive scaling symmetry (activations: "
                            f"{_activations(w.spec)}); positive rescaling holds through ReLU-family activations, "
                            f"max pooling and linear maps only; {hint}")
        return _act(w, "scaling", generator, low=self.low, high=self.high)


class RandomSignFlip(Transform):
    """Flip the sign of each neuron with probability 1/2 (writers and readers alike), independently
    per network. Keeps each network's function where the spec lists a sign symmetry (odd activations:
    tanh, sin, linear maps); raises a :class:`SpecError` naming the missing symmetry otherwise."""

    def forward(self, w, generator):
        if not any(s.sign for s in w.spec.scalings):
            hint = ("use RandomScaling, the symmetry of positively homogeneous activations"
                    if any(s.positive for s in w.spec.scalings) else "the spec lists no scaling symmetry of any kind")
            raise SpecError(f"RandomSignFlip: the spec lists no sign symmetry (activations: {_activations(w.spec)}); "
                            f"sign flips hold through odd activations (tanh, sin) and linear maps only; {hint}")
        return _act(w, "sign", generator)
