"""Group actions on weights: permutations, positive rescaling, sign flips."""
from .permutation import (check_permutations, compose_permutations, identity_permutation, invert_permutation, permute,
                          random_permutation)
from .scaling import flip_sign, random_scaling, random_sign_flip, scale

__all__ = ["random_permutation", "permute", "invert_permutation", "compose_permutations", "identity_permutation",
           "check_permutations", "random_scaling", "scale", "random_sign_flip", "flip_sign"]
