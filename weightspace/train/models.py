"""Metanetworks by name: ``build_model("ngt", spec, out_features=10, norm=stats, hidden=32)``.

Design: a small registry (name -> factory) in the style of the tracer's ``@rule`` registry, so the
trainer, the ``weightspace train`` command and the examples pick models the same way and a user adds
one with :func:`register_model`. Every factory takes ``(spec, out_features, norm, **options)`` and
returns a module mapping a ``WeightSpace`` batch to ``[B, out_features]`` (or to a ``WeightSpace``
when ``out_features`` is None: an equivariant head). Graph metanetworks infer their input widths on
the first batch, so :func:`build_model` runs one probe batch before the optimizer sees the
parameters.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UsageError
from ..space import WeightSpace
from ..spec import WeightSpaceSpec

__all__ = ["MODELS", "register_model", "build_model", "model_names"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: ``@register_model("my-model")`` on ``factory(spec, out_features, norm, **options)``."""
    def deco(factory):
        MODELS[name] = factory
        return factory
    return deco


def model_names() -> list[str]:
    return sorted(MODELS)


@register_model("flat-mlp")
def _flat_mlp(spec, out_features, norm, hidden=(256, 256), dropout=0.1):
    from ..nn import FlatMLP
    return FlatMLP(spec, tuple(hidden), out_features, norm=norm, dropout=dropout)


@register_model("unf")
def _unf(spec, out_features, norm, channels=(16, 16), **options):
    from ..nn import UNF
    return UNF(spec, tuple(channels), out_features, norm=norm, **options)


@register_model("nfn-np")
def _nfn_np(spec, out_features, norm, channels=(16, 16), io_embed=True, **options):
    from ..nn import NFN
    return NFN(spec, tuple(channels), out_features, mode="np", io_embed=io_embed, norm=norm, **options)


@register_model("nfn-hnp")
def _nfn_hnp(spec, out_features, norm, channels=(16, 16), **options):
    from ..nn import NFN
    return NFN(spec, tuple(channels), out_features, mode="hnp", norm=norm, **options)


@register_model("nggnn")
def _nggnn(spec, out_features, norm, hidden=32, layers=4, probe=0, **options):
    from ..nn import NGGNN
    return NGGNN(hidden, layers, out_features, norm=norm, probe=bool(probe), **options)


@register_model("ngt")
def _ngt(spec, out_features, norm, hidden=64, layers=4, heads=8, probe=0, **options):
    from ..nn import NGT
    return NGT(hidden, layers, heads, out_features, norm=norm, probe=bool(probe), **options)


@register_model("gmn")
def _gmn(spec, out_features, norm, hidden=64, layers=4, probe=0, **options):
    from ..nn import GMN
    return GMN(hidden, layers, out_features, norm=norm, probe=bool(probe), **options)


@register_model("scalegmn")
def _scalegmn(spec, out_features, norm, hidden=64, layers=4, **options):
    from ..nn import ScaleGMN
    return ScaleGMN(hidden, layers, out_features, norm=norm, **options)


def build_model(name: str, spec: WeightSpaceSpec, out_features: int | None, norm=None,
                generator: torch.Generator | None = None, evaluator: Callable | None = None,
                **options: Any) -> nn.Module:
    """The metanetwork ``name`` for networks of ``spec``, its lazy input widths materialized.

    ``generator``: seeds the parameter initialization (torch's modules draw from the global
    generator, so it is forked and restored: the caller's random state is left as it was).
    ``probe=S`` (graph metanetworks): Neural Graphs' probe features, every neuron's value on S
    probe inputs; ``evaluator(S) -> (module, inputs [S, ...])`` runs the zoo's networks (INR zoos
    have one: :func:`weightspace.train.data.zoo_evaluator`)."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(model_names())} "
                         "(or register one with weightspace.train.register_model)", "--model")
    factory = MODELS[name]
    _check_options(name, factory, options)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(spec, out_features, norm, **options)
        except TypeError as e:
            raise UsageError(f"model {name!r} refused its options {options}: {e}", "--model-options") from e
        if options.get("probe"):
            if not hasattr(model, "probe_with"):
                raise UsageError(f"model {name!r} does not read probe features; drop probe from its options",
                                 "--model-options")
            if evaluator is None:
                raise UsageError(f"probe features need a module that runs this zoo's networks; only INR zoos "
                                 f"have one so far: drop probe from the options of {name!r}", "--model-options")
            model.probe_with(*evaluator(int(options["probe"])))
        probe = WeightSpace(spec, {p.name: torch.zeros(2, *p.shape) for p in spec.params})
        was = model.training
        model.eval()
        with torch.no_grad():
            model(probe)
        model.train(was)
    return model


def _check_options(name: str, factory, options: dict) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [p for p in params if p not in ("spec", "out_features", "norm")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
                         f"{', '.join(known) or 'none'}", "--model-options")
