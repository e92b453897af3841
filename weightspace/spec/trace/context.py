"""The context a rule works in, and the registry of rules.

A *rule* says how one op maps the labels of its inputs' dims to its outputs' and what it demands of
the symmetry structure. It receives the op's arguments with every tensor replaced by an
:class:`~.labels.ATensor` and returns the output the same way; ``ctx.out`` holds the example output.

Register rules for your own ops with :func:`register_rule`::

    @weightspace.spec.register_rule(my_op)
    def _(ctx, x, *args, **kwargs):
        return ctx.elementwise(x, "my_op", kinds=())   # an elementwise nonlinearity
"""
from __future__ import annotations

import builtins
import itertools
import operator
from typing import Any, Callable, NoReturn

import torch
import torch.fx as fx
from torch.fx.node import map_aggregate

from ..errors import UnsupportedOpError
from ..types import OpKind
from ..vocab import ALL, NONE, POSITIVE, SIGN
from . import structure as S
from .composite import note_elementwise
from .labels import ATensor, Feat, InputDim, Space, Uniform, resolve, unify, unify_aligned
from .state import RawOp, RawParamUse, RawScale, TraceState

_uses = itertools.count(1)
RULES: dict[str, Callable] = {}
TARGET_RULES: dict[Any, Callable] = {}


def rule(*names: str):
    """Decorator registering a built-in rule under canonical op names."""
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def register_rule(target: Any, fn: Callable | None = None):
    """Register a rule for a callable (function, ``MyFunction.apply``) or a method / op name.

    Usable as ``register_rule(target, fn)`` or as a decorator ``@register_rule(target)``.
    """
    def deco(f):
        if isinstance(target, str):
            RULES[target] = f
        else:
            TARGET_RULES[_key(target)] = f
        return f
    return deco(fn) if fn is not None else deco


def _key(target: Any) -> Any:
    owner = getattr(target, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return ("autograd.Function", owner)  # MyFunction.apply, patched or not while tracing
    func = getattr(target, "__func__", None)
    return (func, owner) if func is not None else target


_NAMES: dict[Any, str] = {}


def _function_names() -> dict[Any, str]:
    if _NAMES:
        return _NAMES
    spaces = [torch.nn.functional, torch, torch._C._nn, torch.special, torch.linalg, torch.fft]
    for ns in spaces:
        for n in dir(ns):
            if n.startswith("__"):
                continue
            obj = getattr(ns, n, None)
            if callable(obj) and not isinstance(obj, type):
                try:
                    _NAMES.setdefault(obj, n)
                except TypeError:
                    pass
    ops = {operator.add: "add", operator.iadd: "add_", operator.sub: "sub", operator.isub: "sub_",
           operator.mul: "mul", operator.imul: "mul_", operator.truediv: "div", operator.itruediv: "div_",
           operator.floordiv: "floor_divide", operator.matmul: "matmul", operator.neg: "neg",
           operator.pos: "positive", operator.getitem: "getitem", operator.pow: "pow",
           operator.eq: "eq", operator.ne: "ne", operator.lt: "lt", operator.le: "le", operator.gt: "gt",
           operator.ge: "ge", operator.and_: "logical_and", operator.or_: "logical_or",
           operator.invert: "logical_not", operator.mod: "remainder", operator.abs: "abs",
           builtins.getattr: "getattr"}
    _NAMES.update(ops)
    return _NAMES


def canonical_name(node: fx.Node, module: torch.nn.Module) -> str:
    if node.op == "call_method":
        return node.target
    if node.op == "call_module":
        return type(module.get_submodule(node.target)).__name__
    t = node.target
    try:
        name = _function_names().get(t)
    except TypeError:
        name = None
    if name:
        return name
    owner = getattr(t, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return f"{owner.__name__}.apply"
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)


def qualified_op(node: fx.Node, name: str) -> str:
    """``torch.roll``, ``torch.nn.functional.linear``, ``Tensor.view``, ``operator.add``..."""
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return f"module {node.target} ({name})"
    mod = getattr(node.target, "__module__", None) or ""
    if mod in ("torch._C._VariableFunctions", "torch._VariableFunctions") or mod == "torch":
        return f"torch.{name}"
    if mod.startswith("torch.nn.functional") or mod == "torch._C._nn":
        return f"torch.nn.functional.{name}"
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return name


def find_rule(node: fx.Node, module: torch.nn.Module) -> tuple[Callable | None, str, bool]:
    """The rule for a node, its canonical name and whether it is an in-place variant."""
    name = canonical_name(node, module)
    if node.op in ("call_function", "call_module"):
        target = node.target if node.op == "call_function" else type(module.get_submodule(node.target))
        try:
            user = TARGET_RULES.get(_key(target))
        except TypeError:
            user = None
        if user is not None:
            return user, name, False
    if name in RULES:
        return RULES[name], name, False
    if name.endswith("_") and not name.endswith("__") and name[:-1] in RULES:
        return RULES[name[:-1]], name, True
    return None, name, False


def iter_tensors(x: Any):
    out: list[ATensor] = []
    map_aggregate(x, lambda a: out.append(a) if isinstance(a, ATensor) else None)
    return out


class RuleContext:
    """What a rule can see and do: the node, its example output, and the trace's structures."""

    def __init__(self, state: TraceState, node: fx.Node, out: Any, opname: str, inplace: bool = False,
                 name: str | None = None):
        self.state = state
        self.node = node
        self.out = out
        self.opname = opname
        self.inplace = inplace
        self.path = node.meta.get("ws_path", "")
        self.name = name or (f"{self.path}.{node.name}" if self.path else node.name)
        self.absorbed: set[int] = set()
        self.accounted: set[str] = set()
        self.use_id = next(_uses)
        self.name_hint: str | None = None     # composite rules name the ops they build
        self.pending_hint: str | None = None

    # ------------------------------------------------------------------------------ failures
    def fail(self, reason: str) -> NoReturn:
        raise UnsupportedOpError(self.node.name, qualified_op(self.node, self.opname), self.path or None, reason)

    def random_draw(self) -> None:
        """This op draws random numbers (see :mod:`.rules.creation`): recorded, and refused by name
        when the spec is to be checked, since the module's outputs then change from call to call."""
        self.state.random_draws.append((self.node.name, qualified_op(self.node, self.opname), self.path or None))

    def guard(self, fn: Callable, *args):
        try:
            return fn(*args)
        except S.StructureError as e:
            self.fail(str(e))

    # ------------------------------------------------------------------------------ structure
    def unify(self, a, b) -> None:
        self.guard(unify, a, b)

    def unify_aligned(self, pairs) -> None:
        self.guard(unify_aligned, pairs)

    def resolve(self, f: Feat) -> S.Var:
        return self.guard(resolve, f)

    def fix(self, label) -> None:
        if isinstance(label, Feat):
            self.guard(lambda: S.fix(resolve(label)))

    def pin(self, label, why: str) -> None:
        """Fix ``label`` (a :class:`Feat` or a structure variable) on purpose, saying why: the
        reason, the op and its module become a note of the spec (:mod:`.notes`)."""
        if not isinstance(label, (Feat, S.Var)):
            return  # positions: nothing to pin
        var = self.resolve(label) if isinstance(label, Feat) else label
        where = f" in {self.path}" if self.path else ""
        self.state.pins.append((list(S.leaves(var)), f"{qualified_op(self.node, self.opname)}{where}: {why}",
                                False))
        self.guard(S.fix, var)

    def spread(self, label, n: int) -> None:
        """A dim of size 1 labelled ``label`` is broadcast to ``n`` positions (binary ops, ``expand``,
        ``repeat``, batched ``matmul``). Its one entry is copied to positions that do not move with
        it, so when it is a feature (``h[:, 3:4]``: neuron 3 of a site, or one entry of a parameter
        axis) that feature is pinned: a permutation bringing another neuron there would change
        every copy. A slice of a site that is *not* broadcast stays a stretch of the site's group
        (the group splits around it, and permutations inside each stretch remain)."""
        if n != 1:
            self.fix(label)

    def new_site(self, size: int, name: str | None = None, **kw) -> Space:
        return self.state.new_site(size, name or self.name, **kw)

    def site_like(self, region: Feat, name: str | None = None, diag: S.Var | None = None) -> Space:
        """A new site whose neurons are those of ``region`` (same group), with its own values."""
        var = self.guard(region.space.var_at, region.start, region.length)
        return self.new_site(region.length, name, var=var, diag=diag)

    # ------------------------------------------------------------------------------ features
    def site_feat(self, x: ATensor, dim: int) -> Feat:
        """Dim ``dim`` of ``x`` read as features by a parameterized op: a stretch of a site."""
        lab = x.dims[dim]
        size = x.shape[dim]
        if isinstance(lab, Feat):
            if lab.space.is_site:
                if lab.path:
                    self.fail("features split into heads are read as the input features of an op")
                return lab
            if x.param is None and not lab.plain:
                self.fail("a computed tensor is read as input features")
            region = lab.region()
            site = self.site_like(region, f"{self.name}.source")
            self.record(OpKind.AFFINE, [], site, [self.use("value", x, ["neuron" if i == dim else "fixed"
                                                                  for i in range(x.value.dim())])],
                        {"op": "source"})
            self.scale(x, dim, Feat(site, 0, site.size), +1)
            return Feat(site, 0, site.size, inner=lab.inner, outer=lab.outer)
        if isinstance(lab, InputDim):
            site = self.state.input_site(lab.key, size, str(lab.key[0]))
            return Feat(site, 0, size)
        site = self.new_site(size, f"{self.name}.positions", kind="position", var=S.fixed(size),
                             diag=S.fixed(size))
        return Feat(site, 0, size)

    def held_of(self, x: ATensor) -> Feat | None:
        return x.held

    @staticmethod
    def remap(dims: list, old: Feat, site: Space) -> list:
        """Labels over the stretch ``old`` relabelled onto the same neurons of ``site``."""
        out = []
        for d in dims:
            if isinstance(d, Feat) and d.space is old.space and old.start <= d.start and \
                    d.start + d.length <= old.start + old.length:
                d = Feat(site, d.start - old.start, d.length, d.path, d.inner, d.outer)
            out.append(d)
        return out

    # ------------------------------------------------------------------------------ diagonal
    def diag(self, f: Feat) -> S.Var:
        return self.guard(f.space.diag_at, f.start, f.length)

    def restrict(self, f: Feat | None, kinds) -> None:
        if f is not None and f.space.is_site:
            S.restrict_kinds(self.diag(f), kinds)

    def break_diag(self, f: Feat | None) -> None:
        if f is not None and f.space.is_site:
            S.fix(self.diag(f))

    def absorb(self, *xs: ATensor | None) -> None:
        """The rule has dealt with the scaling of these inputs' held values."""
        for x in xs:
            if x is not None:
                self.absorbed.add(id(x))

    def scale(self, t: ATensor | None, dim: int, site: Feat, exponent: int) -> None:
        """Parameter ``t`` (dim ``dim``) is scaled by the diagonal symmetry of ``site``."""
        if t is None:
            return
        lab = t.dims[dim]
        if t.param is None or not isinstance(lab, Feat) or lab.space.kind != "param" or not lab.plain \
                or site.path or not site.space.is_site:
            self.break_diag(site.region() if isinstance(site, Feat) and site.space.is_site else None)
            return
        self.state.scales.append(RawScale(t.param, lab.space.axis, lab.start, lab.length, site, exponent,
                                          self.use_id))

    # ------------------------------------------------------------------------------ records
    def use(self, role: str, t: ATensor | None, roles: list[str]) -> RawParamUse | None:
        """The parameter behind ``t`` as used by this op (``roles`` per dim of ``t``)."""
        if t is None:
            return None
        if t.param is None:
            return None
        self.accounted.add(t.param)
        shape = self.state.tensors[t.param].shape
        ranges = [(0, n) for n in shape]
        dims = ["fixed"] * len(shape)
        for d, lab in enumerate(t.dims):
            if isinstance(lab, Feat) and lab.space.kind == "param" and lab.space.param == t.param:
                a = lab.space.axis
                ranges[a] = (lab.start, lab.start + lab.length)
                dims[a] = roles[d]
        for a, k in t.meta.get("pinned", {}).items():
            ranges[a] = (k, k + 1)
        self.state.param_uses.setdefault(t.param, []).append((self.use_id, tuple(ranges)))
        return RawParamUse(role, t.param, tuple(dims), tuple(ranges))

    def record(self, kind: OpKind | str, inputs: list[Feat], output: Space, params=(), attrs=None,
               name: str | None = None) -> RawOp:
        """A dataflow op of ``kind`` (see :class:`~weightspace.spec.types.OpKind`) writing ``output``;
        ``attrs`` keys are documented in :data:`~weightspace.spec.types.OP_ATTRS`."""
        name = name or output.name
        op = RawOp(OpKind.of(kind, name), name, list(inputs), output,
                   [p for p in params if p is not None], dict(attrs or {}))
        self.state.ops.append(op)
        return op

    # ------------------------------------------------------------------------------ helpers
    def tensor(self, value, dims, **kw) -> ATensor:
        return ATensor(value, list(dims), **kw)

    def elementwise(self, x: ATensor, opname: str, kinds) -> ATensor:
        """An elementwise function of ``x``'s values (activation, spatial op): same neurons.

        The result stays on ``x``'s site when nothing else reads ``x``'s values; otherwise it gets a
        site of its own, joined to ``x``'s by an ``activation`` op."""
        if not isinstance(x, ATensor):
            return self.out
        y = x.like(self.out[0] if isinstance(self.out, tuple) else self.out)
        if x.held is None:
            return y
        src = self.node.args[0] if self.node.args else None
        shared = isinstance(src, fx.Node) and len(src.users) > 1 and not self.inplace
        if shared:
            site = self.site_like(x.held, diag=self.diag(x.held))
            self.record(OpKind.ACTIVATION, [x.held], site, attrs={"op": opname})
            y = x.like(y.value, self.remap(x.dims, x.held, site), held=Feat(site, 0, site.size))
            self.absorb(x)
        note_elementwise(self.state, x.held, x.value, y.held)
        y.held.space.activations.append((y.held.start, y.held.start + y.held.length, opname))
        self.restrict(y.held, kinds)
        return y

    def apply(self, fn: Callable, *args, _as: str | None = None, **kwargs):
        """Run ``fn`` on abstract arguments inside a rule: concrete value and labels both.
        ``_as`` names the op (and site) it creates."""
        from .interpret import run_rule  # local import: interpret imports this module
        self.pending_hint = _as
        values = map_aggregate((args, kwargs), lambda a: a.value if isinstance(a, ATensor) else a)
        out = fn(*values[0], **values[1])
        return run_rule(self, fn, out, args, kwargs)


__all__ = ["RuleContext", "rule", "register_rule", "RULES", "ALL", "POSITIVE", "SIGN", "NONE", "OpKind",
           "ATensor", "Feat", "InputDim", "Uniform", "iter_tensors"]
