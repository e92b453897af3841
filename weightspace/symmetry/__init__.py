"""Group actions on weights: permutations, positive rescaling, sign flips, and typed group elements.

Every action works on a state dict (one network), a WeightSpace (a batch) and features
``name -> Tensor[*lead, *shape]`` (any leading dims): parameter axes are indexed from the right.
"""
from .element import GroupElement, act, as_element, random_element
from .kinds import KINDS, SymmetryKind, register_kind
from .permutation import (check_permutations, compose_permutations, identity_permutation, invert_permutation, permute,
                          random_permutation)
from .scaling import flip_sign, random_scaling, random_sign_flip, scale

__all__ = ["random_permutation", "permute", "invert_permutation", "compose_permutations", "identity_permutation",
           "check_permutations", "random_scaling", "scale", "random_sign_flip", "flip_sign",
           "GroupElement", "random_element", "act", "as_element", "SymmetryKind", "register_kind", "KINDS"]
