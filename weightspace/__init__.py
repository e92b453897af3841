"""weightspace: learning on neural-network weights.

Any PyTorch model becomes a weight-space object with its symmetries known::

    spec = weightspace.WeightSpaceSpec.from_module(model, example_input)
    perms = weightspace.random_permutation(spec)
    permuted = weightspace.permute(model.state_dict(), spec, perms)   # same function, moved weights

``import weightspace`` is cheap: every public name is imported from its submodule on first use
(PEP 562), so torch_geometric, matplotlib, scipy and scikit-learn load only when a function that
needs them is used. To export a name, add it to ``_EXPORTS`` (the submodule that defines it); to
expose a submodule as an attribute (``weightspace.align``), add it to ``_SUBMODULES``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it; __all__ keeps this order
_EXPORTS: dict[str, str] = {
    # specs: parameters, symmetry groups, dataflow
    "WeightSpaceSpec": ".spec", "WeightSpace": ".space", "ParamSpec": ".spec", "GroupSpec": ".spec",
    "ScalingSpec": ".spec", "ScaleAction": ".spec", "Segment": ".spec", "Site": ".spec", "SiteView": ".spec",
    "Op": ".spec", "ParamUse": ".spec", "Dataflow": ".spec", "SpecError": ".spec", "TraceError": ".spec",
    "UnsupportedOpError": ".spec", "register_rule": ".spec", "site_activations": ".spec",
    # group actions
    "random_permutation": ".symmetry", "permute": ".symmetry", "invert_permutation": ".symmetry",
    "compose_permutations": ".symmetry", "identity_permutation": ".symmetry", "check_permutations": ".symmetry",
    "random_scaling": ".symmetry", "scale": ".symmetry", "random_sign_flip": ".symmetry", "flip_sign": ".symmetry",
    "GroupElement": ".symmetry", "random_element": ".symmetry", "act": ".symmetry",
    # checkpoints
    "load_checkpoint": ".io", "save_checkpoint": ".io", "CheckpointError": ".io",
    # parameter graphs (torch_geometric, matplotlib)
    "to_graph": ".graph", "from_graph": ".graph", "node_permutation": ".graph", "plot_graph": ".graph",
    "probe_features": ".graph",
    # datasets of networks
    "fit_inrs": ".data", "INRFit": ".data", "render_inrs": ".data", "load_images": ".data", "load_zoo": ".data",
    "WeightDataset": ".data", "collate_weights": ".data", "normalization_stats": ".data",
    "DataFormatError": ".data",
    # alignment and merging (weightspace.align, weightspace.merge)
    "weight_matching": ".align", "activation_matching": ".align", "ste_matching": ".align",
    "sinkhorn_matching": ".align", "merge_many": ".align", "tree_matching": ".align", "tree_merge_many": ".align",
    "matching_analysis": ".align", "merge_comparison": ".align", "with_symmetries": ".symmetry.extended",
    "repair": ".align", "reset_bn_statistics": ".align",
    "interpolate": ".merge", "barrier_curve": ".merge", "BarrierCurve": ".merge", "plot_barrier": ".merge",
    "weighted_average": ".merge", "task_arithmetic": ".merge", "ties_merging": ".merge", "dare": ".merge",
}

# submodules reachable as attributes without an explicit import (``weightspace.align.weight_matching``)
_SUBMODULES = ("align", "cli", "commands", "data", "demo", "graph", "inputs", "io", "merge", "models", "space",
               "nn", "augment", "optim", "spec", "symmetry", "testing")

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value              # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))

