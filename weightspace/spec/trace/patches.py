"""What the tracer patches while it runs a module's forward, and why.

* ``torch.autograd.Function.apply``: a custom Function is recorded as one opaque node instead of
  inlining its forward (it is a black box that needs a rule).
* torch's random draws (``torch.randn``, ``torch.rand_like``, ``Tensor.normal_`` ...): recorded as
  graph nodes even when no traced value goes in (``torch.randn(h.shape)`` sees only a concrete
  shape), so the rules see every draw and a module whose outputs are random is refused naming the
  op and module (:mod:`.rules.creation`) instead of failing its self-check as an "internal error".
  A draw made while the tracer evaluates a recorded node, or by another thread, runs unpatched.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import types

import torch
import torch.fx as fx

from .context import _function_names
from .rules.creation import RANDOM

_RANDOM_METHODS = ("normal_", "uniform_", "bernoulli_", "exponential_", "cauchy_", "log_normal_", "geometric_",
                   "random_", "bernoulli", "multinomial")


@contextlib.contextmanager
def traced_patches(tracer):
    with _opaque_autograd_functions(tracer), _recorded_random_draws(tracer):
        yield


@contextlib.contextmanager
def _opaque_autograd_functions(tracer):
    """Record ``MyFunction.apply(x)`` as one node instead of inlining its forward."""
    original = torch.autograd.Function.__dict__["apply"]

    def apply(cls, *args, **kwargs):
        if any(isinstance(a, fx.Proxy) for a in args) or any(isinstance(a, fx.Proxy) for a in kwargs.values()):
            return tracer.create_proxy("call_function", cls.apply, args, kwargs, name=f"{cls.__name__}_apply")
        return original.__func__(cls, *args, **kwargs)

    torch.autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        torch.autograd.Function.apply = original


@contextlib.contextmanager
def _recorded_random_draws(tracer):
    _function_names()  # name the original functions before any is patched
    thread = threading.get_ident()
    saved: list[tuple[object, str, object, bool]] = []

    def patch(owner, name: str, method: bool) -> None:
        orig = getattr(owner, name, None)
        if not callable(orig) or isinstance(orig, (type, types.ModuleType)):
            return  # not a function of this namespace (torch.random is a module)

        @functools.wraps(orig)
        def draw(*args, **kwargs):
            if tracer.evaluating or threading.get_ident() != thread:  # another thread's draw: not ours
                return orig(*args, **kwargs)
            if method:
                return tracer.create_proxy("call_method", name, args, kwargs)
            return tracer.create_proxy("call_function", orig, args, kwargs)

        saved.append((owner, name, orig, name in vars(owner)))
        setattr(owner, name, draw)

    try:
        for name in RANDOM:
            patch(torch, name, method=False)
        for name in _RANDOM_METHODS:
            patch(torch.Tensor, name, method=True)
        yield
    finally:
        for owner, name, orig, own in reversed(saved):
            if own:
                setattr(owner, name, orig)
            else:  # inherited (Tensor.normal_ lives on TensorBase): drop the shadowing wrapper
                delattr(owner, name)
