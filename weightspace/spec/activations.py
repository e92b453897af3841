"""The values a network's neuron sets (dataflow sites) take on some inputs."""
from __future__ import annotations

from typing import Any

import torch

from .errors import SpecError, require_module
from .spec import WeightSpaceSpec


def whole_site(t) -> tuple[int, int] | None:
    """``(site id, neuron dim)`` when the traced tensor ``t`` carries all of one site's neurons, in
    order, along a single dim; None otherwise (a part of a site, or neurons spread over dims)."""
    from .trace.labels import Feat

    h = t.held
    if h is None or h.start != 0 or h.length != h.space.size:
        return None
    dims = [i for i, d in enumerate(t.dims) if isinstance(d, Feat) and d.space is h.space]
    if len(dims) != 1 or not t.dims[dims[0]].plain or t.dims[dims[0]].length != h.space.size:
        return None
    return h.space.site_id, dims[0]


def site_activations(module: torch.nn.Module, inputs: Any, spec: WeightSpaceSpec | None = None,
                     flatten: bool = True, pre_activation: bool = False) -> dict[int, torch.Tensor]:
    """``{site id: values}`` for every site of ``module``'s dataflow on ``inputs``.

    Each site's values are taken after the last elementwise op applied to it (activation, pooling),
    with the neuron axis last: ``[N, size]`` where N runs over samples and positions (pixels, tokens)
    when ``flatten``, else the tensor's own leading dims. Site ids match ``spec.dataflow.sites`` of a
    spec traced from the same module (pass ``spec`` to have that checked). Runs in eval mode, no grad.
    With ``pre_activation``, each site's values are taken as the op that writes the site produced them,
    before any elementwise op (the pre-activations REPAIR corrects).
    """
    from .trace import _as_inputs
    from .trace.interpret import interpret
    from .trace.state import TraceState
    from .trace.tracer import ConcreteTracer

    require_module(module, "site_activations")
    args, kwargs = _as_inputs(inputs)
    was_training = module.training
    module.eval()
    recorded: dict[int, torch.Tensor] = {}

    def record(t):
        found = whole_site(t)
        if found is None or (pre_activation and found[0] in recorded):
            return
        v = t.value.detach().movedim(found[1], -1)
        recorded[found[0]] = v.reshape(-1, v.shape[-1]) if flatten else v

    try:
        with torch.no_grad():
            graph = ConcreteTracer().trace_concrete(module, args, kwargs)
            state = TraceState(module)
            interpret(graph, state, on_value=record)
    finally:
        module.train(was_training)
    named = dict(zip(_placeholder_names(graph), args))
    named.update(kwargs)
    for key, site in state.input_sites.items():
        if len(key) == 2 and key[0] in named and isinstance(key[1], int) and torch.is_tensor(named[key[0]]):
            v = named[key[0]].detach().movedim(key[1], -1)
            recorded.setdefault(site.site_id, v.reshape(-1, v.shape[-1]) if flatten else v)
    if spec is not None and spec.dataflow is not None:
        sizes = [s.size for s in spec.dataflow.sites]
        if sizes != [s.size for s in state.sites]:
            raise SpecError("the module's dataflow does not match the spec's (was the spec traced from another "
                            "architecture?)")
    return recorded


def _placeholder_names(graph) -> list[str]:
    return [n.target for n in graph.nodes if n.op == "placeholder"]
