"""Weight-space augmentation: composable transforms on a :class:`~weightspace.WeightSpace` batch.

Each transform is a callable ``t(w, generator=None) -> WeightSpace`` that makes one independent
draw per network of the batch, vectorized over the batch, and reads everything it needs from
``w.spec`` (so it works on every traced architecture). Apply them to raw weights, then normalize::

    from weightspace import augment as A

    t = A.Compose([A.RandomPermutation(), A.RandomSignFlip(),          # same functions
                   A.RandomApply(A.INRRotate(15), p=0.5),              # INR geometry (SIRENs)
                   A.GaussianNoise(0.02)])                             # small changes of function
    gen = torch.Generator().manual_seed(0)
    for w, y in loader:
        w = t(w, gen)
        w, lam, partner = A.WeightMixup(alpha=0.2, align="match")(w, gen)
        out = model(norm.apply(w))                 # norm = ws.normalization_stats(training weights)
        loss = (lam * F.cross_entropy(out, y, reduction="none")
                + (1 - lam) * F.cross_entropy(out, y[partner], reduction="none")).mean()

* function-preserving (:mod:`.symmetry`): ``RandomPermutation``, ``RandomScaling(low, high)`` (where
  the spec lists a positive scaling), ``RandomSignFlip`` (where it lists a sign symmetry);
* small changes (:mod:`.noise`): ``GaussianNoise(std, relative=True)``, ``WeightDropout(p)``,
  ``MagnitudeMasking(q)``;
* INR geometry (:mod:`.inr`), folded exactly into the first layer: ``INRRotate(degrees)``,
  ``INRTranslate(shift)``, ``INRScale(scale)``, and the functions ``rotate_inr`` /
  ``translate_inr`` / ``scale_inr`` / ``inr_affine``;
* :class:`WeightMixup` (:mod:`.mixup`), returning ``(mixed, lam, partner)``;
* ``Compose`` and ``RandomApply(t, p)`` (:mod:`.base`), as in torchvision.
"""
from .base import Compose, RandomApply, Transform
from .inr import (INRRotate, INRScale, INRTranslate, inr_affine, inr_first_layer, rotate_inr, scale_inr,
                  translate_inr)
from .mixup import WeightMixup, beta, random_partners
from .noise import GaussianNoise, MagnitudeMasking, WeightDropout
from .symmetry import RandomPermutation, RandomScaling, RandomSignFlip

__all__ = ["Transform", "Compose", "RandomApply", "RandomPermutation", "RandomScaling", "RandomSignFlip",
           "GaussianNoise", "WeightDropout", "MagnitudeMasking", "INRRotate", "INRTranslate", "INRScale",
           "inr_first_layer", "inr_affine", "rotate_inr", "translate_inr", "scale_inr", "WeightMixup",
           "beta", "random_partners"]
