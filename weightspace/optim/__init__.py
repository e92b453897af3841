"""Learned optimizers driven by equivariant metanetworks, as a ``torch.optim.Optimizer``.

``LearnedOptimizer(module, spec, meta_model="unf")`` updates all of a module's parameters at once
with the output of a metanetwork (:mod:`.meta_models`) fed with per-entry features (:mod:`.features`)
through a functional update rule (:mod:`.rule`); ``meta_train`` (:mod:`.meta_train`) learns the
rule by truncated backpropagation through unrolled inner training on a family of small tasks
(:mod:`.tasks`); ``evaluate`` (:mod:`.evaluate`) compares it with tuned Adam on held-out tasks and
:mod:`.plot` draws the curves.

The functions ``meta_train`` and ``evaluate`` are exported under the names of their modules; the
modules stay importable by path (``from weightspace.optim.meta_train import unroll``).
"""
from .features import FeatureConfig, build_features
from .meta_models import META_MODELS, EquivariantUpdate, GraphUpdate, PerParameterMLP, build_meta_model, open_io_spec
from .optimizer import LearnedOptimizer
from .rule import LearnedUpdate
from .tasks import TaskFamily, digits_family, image_family, make_classifier
from .evaluate import Curves, adam, evaluate, learned, train_curve, tune_adam
from .meta_train import MetaTrainResult, meta_train
from .plot import plot_curves, plot_meta_losses

__all__ = ["LearnedOptimizer", "LearnedUpdate", "FeatureConfig", "build_features", "META_MODELS", "PerParameterMLP",
           "EquivariantUpdate", "GraphUpdate", "build_meta_model", "open_io_spec", "TaskFamily", "digits_family",
           "image_family",
           "make_classifier", "Curves", "adam", "learned", "train_curve", "tune_adam", "evaluate", "MetaTrainResult",
           "meta_train", "plot_curves", "plot_meta_losses"]
