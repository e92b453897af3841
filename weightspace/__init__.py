"""weightspace: learning on neural-network weights.

Any PyTorch model becomes a weight-space object with its symmetries known::

    spec = weightspace.WeightSpaceSpec.from_module(model, example_input)
    perms = weightspace.random_permutation(spec)
    permuted = weightspace.permute(model.state_dict(), spec, perms)   # same function, moved weights
"""
from .align import (activation_matching, merge_many, repair, reset_bn_statistics, sinkhorn_matching, ste_matching,
                    weight_matching)
from .merge import (BarrierCurve, barrier_curve, dare, interpolate, plot_barrier, task_arithmetic, ties_merging,
                    weighted_average)
from .data import (DataFormatError, INRFit, WeightDataset, collate_weights, fit_inrs, load_images, load_zoo,
                   normalization_stats, render_inrs)
from .graph import from_graph, node_permutation, plot_graph, probe_features, to_graph
from .io import CheckpointError, load_checkpoint, save_checkpoint
from .space import WeightSpace
from .spec import (Dataflow, GroupSpec, Op, ParamSpec, ParamUse, ScaleAction, ScalingSpec, Segment, Site, SiteView,
                   SpecError, TraceError, UnsupportedOpError, WeightSpaceSpec, register_rule, site_activations)
from .symmetry import (check_permutations, compose_permutations, flip_sign, identity_permutation, invert_permutation,
                       permute, random_permutation, random_scaling, random_sign_flip, scale)

__version__ = "0.1.0"

__all__ = [
    "WeightSpaceSpec", "WeightSpace", "ParamSpec", "GroupSpec", "ScalingSpec", "ScaleAction", "Segment", "Site",
    "SiteView", "Op", "ParamUse", "Dataflow", "SpecError", "TraceError", "UnsupportedOpError", "register_rule", "site_activations",
    "random_permutation", "permute", "invert_permutation", "compose_permutations", "identity_permutation",
    "check_permutations", "random_scaling", "scale", "random_sign_flip", "flip_sign",
    "load_checkpoint", "save_checkpoint", "CheckpointError",
    "to_graph", "from_graph", "node_permutation", "plot_graph", "probe_features",
    "fit_inrs", "INRFit", "render_inrs", "load_images", "load_zoo", "WeightDataset", "collate_weights",
    "normalization_stats", "DataFormatError",
    # alignment and merging (weightspace.align, weightspace.merge)
    "weight_matching", "activation_matching", "ste_matching", "sinkhorn_matching", "merge_many", "repair",
    "reset_bn_statistics", "interpolate", "barrier_curve", "BarrierCurve", "plot_barrier", "weighted_average",
    "task_arithmetic", "ties_merging", "dare",
]
