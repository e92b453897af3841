"""``torch.fx`` tracing with concrete values alongside the proxies.

Every node is evaluated on the example inputs while it is recorded (``node.meta["val"]``). Shape
queries (``x.shape``, ``x.size()``, ``x.dim()``, ``len(x)``, dtype, device) return plain Python values,
so shape-dependent Python (``if x.dim() == 3``) traces as it runs on the example inputs, while
control flow on tensor *values* still fails, as it must: no spec can be drawn for it.
``torch.autograd.Function.apply`` is recorded as one opaque node (a custom Function is a black box).
"""
from __future__ import annotations

import inspect
import types
from typing import Any, NoReturn

import torch
import torch.fx as fx
from torch.fx.node import map_aggregate

from ..errors import TraceError, UnsupportedOpError
from .outputs import traced_output
from .patches import traced_patches

_SHAPE_METHODS = frozenset({"size", "dim", "numel", "nelement", "ndimension", "is_floating_point",
                            "is_complex", "is_contiguous", "get_device", "element_size", "stride",
                            "storage_offset", "has_names"})
_SHAPE_FUNCTIONS = frozenset({torch.numel, torch.is_floating_point, torch.is_complex, torch.is_tensor})


def _concrete(x: Any) -> Any:
    return map_aggregate(x, lambda a: a.meta["val"] if isinstance(a, fx.Node) else a)


def fetch_attr(root: torch.nn.Module, target: str) -> Any:
    """``root.a.b.c`` without going through ``nn.Module.__getattr__`` (patched while tracing)."""
    obj: Any = root
    for part in target.split("."):
        if isinstance(obj, torch.nn.Module):
            for table in ("_parameters", "_buffers", "_modules"):
                d = obj.__dict__.get(table, {})
                if part in d:
                    obj = d[part]
                    break
            else:
                obj = object.__getattribute__(obj, part)
        else:
            obj = getattr(obj, part)
    return obj


class ConcreteProxy(fx.Proxy):
    """A proxy that knows its example value and answers shape questions with it."""

    @property
    def value(self) -> Any:
        return self.node.meta["val"]

    def __getattr__(self, k: str):
        value = self.node.meta.get("val")
        if k in _LEAVE_TORCH and isinstance(value, torch.Tensor):
            self._refuse(_LEAVE_TORCH[k], "its values leave torch (for numpy or plain Python), where the tracer "
                         "cannot follow them: stay in torch ops (a numpy round trip such as "
                         "torch.from_numpy(x.numpy()) is the identity: drop it)")
        if isinstance(value, torch.Tensor) and not k.startswith("__"):
            attr = getattr(value, k, None)
            if attr is not None and not callable(attr) and not isinstance(attr, torch.Tensor):
                return attr  # metadata (shape, dtype, is_nested ...) is answered concretely
        return super().__getattr__(k)

    def __len__(self) -> int:
        if isinstance(self.value, (torch.Tensor, tuple, list, torch.Size)):
            return len(self.value)
        return super().__len__()

    def __iter__(self):
        if isinstance(self.value, (torch.Tensor, tuple, list)):
            return iter([self[i] for i in range(len(self.value))])
        return super().__iter__()

    def __setitem__(self, key, value) -> None:
        """``x[key] = v`` is recorded as a new value of ``x`` (:func:`assigned`, out of place) and this
        proxy is rebound to it, so later uses see the write. Its rule accepts constants only (masks
        filled slice by slice, as Swin's shifted-window mask is) and refuses features."""
        new = self.tracer.create_proxy("call_function", assigned, (self, key, value), {})
        self.node = new.node

    def _refuse(self, op: str, reason: str) -> NoReturn:
        """An operation on this proxy that no rule can see (it never becomes a graph node): name the
        node it acts on and the module whose forward does it."""
        path = self.tracer._path[-1] if getattr(self.tracer, "_path", None) else self.node.meta.get("ws_path")
        raise UnsupportedOpError(self.node.name, op, path or None, reason)

    def __bool__(self) -> bool:
        raise TraceError(_value_flow(self.node))

    def __index__(self) -> int:
        raise TraceError(_value_flow(self.node))


def assigned(x: torch.Tensor, key, value) -> torch.Tensor:
    """``x`` with ``x[key] = value`` applied, out of place (how the tracer records item assignment)."""
    out = x.clone()
    out[key] = value
    return out


SETITEM_REFUSAL = ("writing into a traced tensor in place cannot be followed; build the new tensor instead "
                   "(torch.where(mask, v, x), x.masked_fill(mask, v), or torch.cat of the pieces)")


# attribute -> the op named in the error: ways a traced tensor's values leave torch
_LEAVE_TORCH = {"numpy": "Tensor.numpy", "tolist": "Tensor.tolist",
                **{k: f"conversion to a numpy array ({k})" for k in (
                    "__array__", "__array_interface__", "__array_struct__", "__array_function__",
                    "__array_ufunc__", "__array_priority__")}}


def _structured(proxy: fx.Proxy, value: Any):
    """A call that returned a tuple / list gives back the same container of element proxies, so
    ``isinstance(out, tuple)``, unpacking and namedtuple fields behave as they do in eager mode."""
    if isinstance(value, torch.Size) or not isinstance(value, (tuple, list)):
        return proxy
    items = [_structured(proxy[i], v) for i, v in enumerate(value)]
    if hasattr(value, "_fields"):  # namedtuple
        return type(value)(*items)
    if isinstance(value, tuple) and type(value) is not tuple:  # torch.return_types structseq
        try:
            return type(value)(items)
        except TypeError:
            return tuple(items)
    return type(value)(items)


def _inlinable(target) -> bool:
    """Python functions outside torch with no rule of their own (see ``ConcreteTracer._inline``)."""
    module = target.__module__ or "" if isinstance(target, types.FunctionType) else "torch"
    if module == "torch" or module.startswith("torch."):
        return False
    from .context import RULES, TARGET_RULES, _key
    return _key(target) not in TARGET_RULES and target.__name__ not in RULES


def _value_flow(node: fx.Node) -> str:
    where = node.meta.get("ws_path") or "the top-level module"
    return (f"data-dependent control flow at node '{node.name}' (op {_op_text(node)}) in {where}: "
            "Python branches on a tensor's values, so the computation depends on the data and no "
            "single spec describes it. Build the spec by hand with WeightSpaceSpec.from_axes({...}) "
            "or mark the module as a leaf with a registered rule")


def _op_text(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    if node.op == "call_module":
        return f"module {t}"
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)


class ConcreteTracer(fx.Tracer):
    """Symbolic tracer that evaluates each node on example values as it records it.

    ``leaf_types``: module classes kept as single ``call_module`` nodes (they need a module rule).
    Everything else, ``torch.nn`` built-ins included, is traced through to functional calls.
    """

    def __init__(self, leaf_types: tuple[type, ...] = ()):
        super().__init__(autowrap_functions=())
        self.proxy_buffer_attributes = True  # buffers used in forward are state, not anonymous constants
        self.leaf_types = tuple(leaf_types)
        self._path: list[str] = []
        self._inputs: dict[str, Any] = {}
        self.evaluating = False  # running a recorded node's op on example values (patches.py)

    # --------------------------------------------------------------------------- module structure
    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaf_types)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self._path.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._path.pop()

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return ConcreteProxy(node, self)

    # --------------------------------------------------------------------------- concrete values
    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        if kind == "call_method" and target in _SHAPE_METHODS:
            vals = _concrete(self.create_arg(args))
            return getattr(vals[0], target)(*vals[1:], **_concrete(self.create_arg(kwargs)))
        if kind == "call_function" and target in _SHAPE_FUNCTIONS:
            return target(*_concrete(self.create_arg(args)), **_concrete(self.create_arg(kwargs)))
        if kind == "call_function" and _inlinable(target):
            inlined = self._inline(target, args, kwargs)
            if inlined is not None:
                return inlined
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        return _structured(proxy, proxy.node.meta.get("val")) if kind != "placeholder" else proxy

    def _inline(self, fn, args, kwargs):
        """A plain Python function that a library marked as an fx leaf (``torch.fx.wrap``: torchvision's
        Swin attention and relative position bias, for instance) is traced through, so the rules see
        the torch ops inside; it stays one opaque node (needing a rule) when its body cannot be traced
        (data-dependent control flow) or does not return one tensor."""
        before = list(self.graph.nodes)
        try:
            out = fn(*args, **kwargs)
        except TraceError:
            out = None
        if isinstance(out, fx.Proxy):
            return out
        keep = set(before)
        for node in reversed(list(self.graph.nodes)):
            if node not in keep and not node.users:
                self.graph.erase_node(node)
        return None

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["ws_path"] = self._path[-1] if self._path else ""
        if kind != "output":
            node.meta["val"] = self._evaluate(node)
        return node

    def _evaluate(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            if node.target in self._inputs:
                return self._inputs[node.target]
            return node.args[0] if node.args else None  # a specialized default
        if node.op == "get_attr":
            value = fetch_attr(self.root, node.target)
            return value.detach().clone() if isinstance(value, torch.Tensor) else value
        args, kwargs = _concrete(node.args), _concrete(node.kwargs)
        evaluating, self.evaluating = self.evaluating, True
        try:
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            if node.op == "call_module":
                return self.root.get_submodule(node.target)(*args, **kwargs)
        except TraceError:
            raise
        except Exception as e:
            where = node.meta.get("ws_path") or "the top-level module"
            raise TraceError(f"running node '{node.name}' (op {_op_text(node)}) in {where} on the "
                             f"example inputs failed: {type(e).__name__}: {e}") from e
        finally:
            self.evaluating = evaluating
        return None

    def to_bool(self, obj: fx.Proxy) -> bool:
        raise TraceError(_value_flow(obj.node))

    def iter(self, obj: fx.Proxy):
        value = obj.node.meta.get("val")
        if isinstance(value, (tuple, list, torch.Tensor)):
            return iter([obj[i] for i in range(len(value))])
        return super().iter(obj)

    # --------------------------------------------------------------------------- entry point
    def trace_concrete(self, root: torch.nn.Module, inputs: tuple, kwargs: dict) -> fx.Graph:
        """Trace ``root(*inputs, **kwargs)`` as a user calls it: one placeholder per tensor input
        (keyword inputs and ``**kwargs`` too), every other input baked in, omitted arguments left to
        the forward's own defaults (decorated forwards included); the output is reduced to the
        tensors a spec is about (:mod:`.outputs`), with ``self.output_note`` saying which."""
        sig = inspect.signature(root.forward)
        try:
            bound = sig.bind_partial(*inputs, **kwargs)
        except TypeError as e:
            raise TraceError(f"the example inputs do not fit {type(root).__name__}.forward{sig}: {e}. Pass a "
                             "tensor, a tuple of positional inputs, or a dict of keyword inputs") from None
        for pname, p in sig.parameters.items():
            if pname not in bound.arguments and p.default is inspect.Parameter.empty and \
                    p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TraceError(f"example inputs give no value for argument '{pname}' of "
                                 f"{type(root).__name__}.forward")
        self._call = (sig, bound)
        self.output_note = None
        with traced_patches(self):
            return self.trace(root)

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        """Placeholders for the tensor inputs only, then the forward called exactly as the user
        called it (fx's own signature handling cannot follow ``**kwargs`` or decorated forwards)."""
        sig, bound = self._call
        self._inputs = {}

        def placeholder(name: str, value: Any) -> Any:
            if not isinstance(value, torch.Tensor):
                return value  # non-tensor inputs are baked in
            name = name if name not in self._inputs else f"{name}_{len(self._inputs)}"
            self._inputs[name] = value
            return self.create_proxy("placeholder", name, (), {})

        args, kw, gap = [], {}, False
        for pname, p in sig.parameters.items():
            if pname not in bound.arguments:
                gap = gap or p.kind != p.VAR_POSITIONAL  # later arguments go by keyword
                continue
            value, kind = bound.arguments[pname], p.kind
            if kind == inspect.Parameter.VAR_POSITIONAL:
                args.extend(placeholder(f"{pname}_{i}", v) for i, v in enumerate(value))
            elif kind == inspect.Parameter.VAR_KEYWORD:
                kw.update({k: placeholder(k, v) for k, v in value.items()})
            elif kind == inspect.Parameter.POSITIONAL_ONLY:
                args.append(placeholder(pname, value))
            elif kind == inspect.Parameter.KEYWORD_ONLY or gap:
                kw[pname] = placeholder(pname, value)
            else:
                args.append(placeholder(pname, value))

        def call(module, *_):
            out, self.output_note = traced_output(root_fn(module, *args, **kw))
            return out

        return call, [self.root]
