"""Weight-space specs: parameters, their symmetry groups and the dataflow between neuron sets."""
from .activations import site_activations
from .errors import SpecError, TraceError, UnsupportedOpError
from .spec import WeightSpaceSpec
from .trace import register_rule
from .types import (OP_ATTRS, Dataflow, GroupSpec, Op, OpKind, ParamSpec, ParamUse, ScaleAction, ScalingSpec,
                    Segment, Site, SiteView)

__all__ = ["site_activations", "WeightSpaceSpec", "ParamSpec", "GroupSpec", "ScalingSpec", "ScaleAction", "Segment",
           "Site", "SiteView", "Op", "OpKind", "OP_ATTRS", "ParamUse", "Dataflow", "SpecError", "TraceError",
           "UnsupportedOpError", "register_rule"]
