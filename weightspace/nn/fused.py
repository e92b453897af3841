"""One autograd node for a whole :class:`~weightspace.nn.EquivariantLinear` layer (the common case).

When every basis term reduces its input by plain means (no diagonal: no input piece with two axes
of one group) and places its output by broadcasting (no diagonal on the output side either), as
on MLP and CNN specs in NFN's NP and HNP modes, the layer runs as one ``autograd.Function`` whose
backward is written out, so that each full-size tensor is touched as few times as possible:

* forward: one concatenation of inputs per set of output groups that share them, one product per
  group (:func:`.mixing.channel_mix`); the broadcast terms are
  added in place into the piece's full-size product (no full-size temporaries); the means are
  taken from one another (a mean of means), as in the autograd path;
* backward: the gradient of each group is the output gradient summed over the axes the group
  broadcasts over (small); the gradient of a piece starts from its own product's input gradient
  and gets every mean's gradient added into it in place, the small ones summed first.

Only the inputs of the products are saved (the pieces themselves, which the caller holds anyway,
and the small concatenated means); with a fused ReLU (``EquivariantLinear(..., activation="relu")``)
the outputs are rectified in place and saved for its gradient (they are the next layer's input,
held anyway), which saves the separate ReLU's full-size output. Why it pays: on CPU a fresh
full-size tensor costs several times a pass over it (its pages are faulted in and zeroed), so
the step's time beyond the products is mostly its count of full-size temporaries.

Specs with diagonal terms (groups shared across axes: residual streams, attention) take the
autograd path in :mod:`.linear`; the two are checked against each other and by ``gradcheck``.
"""
from __future__ import annotations

import math

import torch

from .mixing import channel_mix, channel_mix_backward


def add_into(ys: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Sum broadcastable tensors into one of ``shape``, smallest first: terms whose sum stays below
    full size are summed out of place (cheap), the rest are added in place into the largest when it
    has the full shape (the caller's promise: every tensor in ``ys`` is a fresh result, or a view of
    one that no other entry overlaps), else into one new tensor."""
    full = math.prod(shape)
    ys = sorted(ys, key=torch.Tensor.numel)
    owned = ys.pop() if ys and tuple(ys[-1].shape) == tuple(shape) else None
    small, big = None, []
    for y in ys:
        if small is not None and math.prod(torch.broadcast_shapes(small.shape, y.shape)) < full:
            small = small + y
        elif small is None and y.numel() < full:
            small = y
        else:
            big.append(y)
    if small is not None:
        big.insert(0, small)
    if owned is None:
        owned = big.pop(0).expand(shape).clone(memory_format=torch.contiguous_format)
    for y in big:
        owned.add_(y)
    return owned


class FusedPlan:
    """The index bookkeeping the fused node needs, taken once from a layer (see :class:`FusedLinear`).

    ``mixes``: output groups with the same list of inputs (e.g. every output kept on one hidden
    neuron axis: the weights into it, out of it, its biases) share one concatenation of the inputs,
    built and saved once. Their products stay separate: stacking the coefficient blocks into one
    ``[sum M, K]`` product measured slower in oneDNN (2048 x 2048 blocks: 189 ms vs 141 ms)."""

    def __init__(self, layer):
        self.pieces = layer.pieces
        self.reductions = layer.reductions
        self.order = layer.reduction_order
        self.groups = [(dst, place.view, inputs) for dst, place, inputs in layer.groups]
        self.dsts = sorted({dst for dst, _, _ in self.groups})
        self.relu = layer.activation == "relu"
        by_inputs: dict[tuple, list[int]] = {}
        for g, (_, _, inputs) in enumerate(self.groups):
            by_inputs.setdefault(tuple((key, order) for key, order, _ in inputs), []).append(g)
        self.mixes = [(self.groups[members[0]][2], members) for members in by_inputs.values()]

    @staticmethod
    def applies(layer) -> bool:
        return all(r.pooled is not None for r in layer.reductions.values()) and \
            all(place.view is not None for _, place, _ in layer.groups)


def reduce_all(reductions: dict, order: list, cut) -> dict[tuple, torch.Tensor]:
    """Every reduction of the layer's input pieces, each from its parent when it has one (a mean of
    means), in ``order``."""
    reduced: dict[tuple, torch.Tensor] = {}
    for key in order:
        red = reductions[key]
        reduced[key] = red(reduced[red.parent] if red.parent is not None else cut[red.src])
    return reduced


def concat_inputs(reduced: dict[tuple, torch.Tensor], inputs) -> torch.Tensor:
    """A group's inputs ``[(key, axis order, width)]``, axes put in the group's order, concatenated
    along channels: ``[B, *group axes, K]``."""
    parts = []
    for key, order, _ in inputs:
        z = reduced[key]
        if order != tuple(range(len(order))):
            z = z.permute(0, *[1 + i for i in order], z.dim() - 1)
        parts.append(z)
    return torch.cat(parts, -1) if len(parts) > 1 else parts[0]


def mix(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``z [..., K] -> [..., M]`` by ``w [M, K]``: an outer product when ``K = 1``, else :func:`channel_mix`."""
    return z * w[:, 0] if w.shape[1] == 1 else channel_mix(z, w)


def _forward_mixes(plan: FusedPlan, cut: list[torch.Tensor], weights):
    """Per mix: the concatenated inputs ``z``; per group: its product, shaped for broadcasting."""
    reduced = reduce_all(plan.reductions, plan.order, cut)
    zs, ys = [], [None] * len(plan.groups)
    for inputs, members in plan.mixes:
        z = concat_inputs(reduced, inputs)
        for g in members:
            w, view = weights[g], plan.groups[g][1]
            y = mix(z, w)
            ys[g] = y if list(y.shape[1:-1]) == view else y.reshape(y.shape[0], *view, y.shape[-1])
        zs.append(z)
    return zs, ys


class FusedLinear(torch.autograd.Function):
    """``apply(plan, n_cut, *cut pieces, *weights) -> output pieces`` (in ``plan.dsts`` order), each
    ``[B, *group axes, F * C_out]``; ``cut`` holds one channels-last tensor per input piece. With
    ``plan.relu`` the outputs are ``relu``'d in place and saved for the ReLU's gradient."""

    @staticmethod
    def forward(ctx, plan: FusedPlan, n_cut: int, *tensors):
        cut, weights = list(tensors[:n_cut]), tensors[n_cut:]
        zs, ys = _forward_mixes(plan, cut, weights)
        per_dst: dict[int, list[torch.Tensor]] = {}
        for (dst, _, _), y in zip(plan.groups, ys):
            per_dst.setdefault(dst, []).append(y)
        b = cut[0].shape[0]
        outs = []
        for dst in plan.dsts:
            pc = plan.pieces[dst]
            shape = (b, *[pc.vaxes[k].size for k in pc.group_axes], per_dst[dst][0].shape[-1])
            y = add_into(per_dst[dst], shape)     # products of one mix are disjoint columns
            outs.append(y.relu_() if plan.relu else y)        # in place: no full-size temporary
        ctx.plan, ctx.n_cut = plan, n_cut
        ctx.shapes = [tuple(c.shape) for c in cut]
        ctx.save_for_backward(*zs, *weights, *(outs if plan.relu else ()))
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable     # a second derivative raises instead of being wrong
    def backward(ctx, *grads):
        plan, n_cut = ctx.plan, ctx.n_cut
        saved = ctx.saved_tensors
        n_m, n_g = len(plan.mixes), len(plan.groups)
        zs, weights = saved[:n_m], saved[n_m:n_m + n_g]
        # channels last, as the products want it (a loss on the [B, C, *shape] views often sends the
        # gradient back channels-first): one copy, into which the ReLU's gradient is taken in place
        fresh = [not g.is_contiguous() for g in grads]
        grads = [g.contiguous() for g in grads]
        if plan.relu:                       # the ReLU's gradient, from its output (saved, not copied)
            tb = torch.ops.aten.threshold_backward
            grads = [tb.grad_input(g, y, 0, grad_input=g) if own else tb(g, y, 0)
                     for g, y, own in zip(grads, saved[n_m + n_g:], fresh)]
        grad_out = dict(zip(plan.dsts, grads))
        need_in = ctx.needs_input_grad[2:2 + n_cut]
        grad_w: list[torch.Tensor | None] = [None] * n_g
        contrib: dict[tuple, list[torch.Tensor]] = {}
        for (inputs, members), z in zip(plan.mixes, zs):
            want_z = any(need_in[plan.reductions[key].src] for key, _, _ in inputs)
            gzs = []
            for g in members:
                dst, view, _ = plan.groups[g]
                go = grad_out[dst]
                dims = [1 + i for i, n in enumerate(view) if n == 1 and go.shape[1 + i] != 1]
                gy = go.sum(dims, keepdim=True) if dims else go
                gz, grad_w[g] = channel_mix_backward(gy.reshape(*z.shape[:-1], go.shape[-1]), z, weights[g],
                                                     want_z, True)
                gzs.append(gz)
            gz = (gzs[0] if len(gzs) == 1 else add_into(gzs, tuple(z.shape))) if want_z else None
            if gz is None:
                continue
            lo = 0
            for key, order, width in inputs:
                part = gz.narrow(-1, lo, width) if len(inputs) > 1 else gz
                lo += width
                if order != tuple(range(len(order))):
                    inv = [order.index(i) for i in range(len(order))]
                    part = part.permute(0, *[1 + i for i in inv], part.dim() - 1)
                contrib.setdefault(key, []).append(part)
        grad_cut: list[torch.Tensor | None] = [None] * n_cut
        for i in range(n_cut):
            if not need_in[i]:
                continue
            shape = ctx.shapes[i]
            terms = []
            for key, parts in contrib.items():
                red = plan.reductions[key]
                if red.src != i:
                    continue
                gr = parts[0] if len(parts) == 1 else add_into(parts, tuple(parts[0].shape))
                pooled = red.pooled
                if pooled:
                    gr = (gr * (1.0 / red.count)).reshape(
                        shape[0], *[1 if k in pooled else n for k, n in enumerate(shape[1:-1])], shape[-1])
                terms.append(gr)
            if terms:
                grad_cut[i] = add_into(terms, shape)
        return (None, None, *grad_cut, *grad_w)
