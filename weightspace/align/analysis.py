"""Why weight matching works: the analysis of Ito et al. (2024), "Analysis of Linear Mode Connectivity
via Permutation-Based Weight Matching".

Their observation: a permutation leaves every weight matrix's singular values unchanged and moves its
singular vectors; weight matching chooses the permutation that lines up the singular vectors of B
with A's where the singular values are large, while the L2 distance between A and B barely drops.
:func:`matching_analysis` measures exactly that, per weight tensor (``[out, ...]`` read as a matrix
``[out, rest]``): the distance before and after matching, the singular values of A and B, and for the
top-k singular pairs the alignment ``|<u_i(A), u_i(B)>|`` (left) and ``|<v_i(A), v_i(B)>|`` (right)
before and after. :meth:`MatchingAnalysis.plot` draws it. :func:`merge_comparison` repeats their
merging experiment with three or more models: MergeMany weight matching against the straight-through
estimator (STE, each model aligned to the first one, then averaged).

It works for any spec and any element ``ws.act`` takes (tree ensembles included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..inputs import as_state
from ..spec.spec import WeightSpaceSpec
from ..symmetry.element import act


@dataclass(frozen=True)
class LayerAnalysis:
    """One weight tensor: Frobenius distances to A before / after matching, singular values
    ``[r]`` of A and B, and top-k alignments ``[k]`` (1 = the same direction up to sign)."""

    name: str
    distance_before: float
    distance_after: float
    singular_a: torch.Tensor
    singular_b: torch.Tensor
    left_before: torch.Tensor
    left_after: torch.Tensor
    right_before: torch.Tensor
    right_after: torch.Tensor


@dataclass(frozen=True)
class MatchingAnalysis:
    layers: tuple[LayerAnalysis, ...]

    def table(self) -> str:
        """A markdown table: distances, and mean top-k left / right alignment before -> after."""
        lines = ["| tensor | L2 before | L2 after | ratio | left align before -> after | right align before -> after |",
                 "|---|---|---|---|---|---|"]
        for r in self.layers:
            ratio = r.distance_after / r.distance_before if r.distance_before else float("nan")
            lines.append(f"| {r.name} | {r.distance_before:.3f} | {r.distance_after:.3f} | {ratio:.3f} | "
                         f"{float(r.left_before.mean()):.3f} -> {float(r.left_after.mean()):.3f} | "
                         f"{float(r.right_before.mean()):.3f} -> {float(r.right_after.mean()):.3f} |")
        return "\n".join(lines)

    def plot(self, path: str | None = None):
        """Three panels (distance per tensor; singular values of A and B; top-k left-vector alignment before,
        dashed, and after, solid); written as PNG when ``path`` is given. Returns the Figure."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(13, 4))
        ax1, ax2, ax3 = fig.subplots(1, 3)
        names = [r.name for r in self.layers]
        x = torch.arange(len(names)).double()
        ax1.bar(x - 0.2, [r.distance_before for r in self.layers], 0.4, label="before")
        ax1.bar(x + 0.2, [r.distance_after for r in self.layers], 0.4, label="after matching")
        ax1.set_xticks(x.tolist(), names, rotation=45, ha="right", fontsize=7)
        ax1.set_ylabel("||A - B||_F")
        ax1.set_title("L2 distance")
        ax1.legend()
        for i, r in enumerate(self.layers):
            color = f"C{i % 10}"
            ax2.semilogy(r.singular_a.tolist(), color=color, label=r.name)
            ax2.semilogy(r.singular_b.tolist(), ":", color=color)
            k = torch.arange(1, len(r.left_after) + 1).tolist()
            ax3.plot(k, r.left_before.tolist(), "--", color=color)
            ax3.plot(k, r.left_after.tolist(), "-", color=color, label=r.name)
        ax2.set_title("singular values: A (solid), B = P(B) (dotted)")
        ax2.set_xlabel("index")
        ax3.set_title("|<u_i(A), u_i(B)>|: before (dashed), after (solid)")
        ax3.set_xlabel("singular index i")
        ax3.set_ylim(-0.02, 1.02)
        ax3.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _svd(m: torch.Tensor):
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return u, s, vh


def _align(ua, ub, k):
    return (ua[:, :k] * ub[:, :k]).sum(0).abs()


def matching_analysis(spec: WeightSpaceSpec, params_a: Any, params_b: Any, element: Any = None, *,
                      top_k: int = 10, names: Sequence[str] | None = None) -> MatchingAnalysis:
    """Ito et al.'s per-tensor analysis of aligning B to A by ``element`` (default: what
    ``weight_matching(spec, a, b)`` returns). ``names``: the tensors to analyse (default: every
    floating weight with at least two axes)."""
    from .weight_matching import weight_matching

    a, b = as_state(params_a, spec, "params_a"), as_state(params_b, spec, "params_b")
    if element is None:
        element = weight_matching(spec, a, b)
    moved = act(b, spec, element)
    if names is None:
        names = [n for n in spec.weight_names if a[n].is_floating_point() and a[n].dim() >= 2]
    layers = []
    for n in names:
        ma, mb, mm = (t[n].reshape(t[n].shape[0], -1) for t in (a, b, moved))
        ua, sa, vha = _svd(ma)
        ub, sb, vhb = _svd(mb)
        um, _, vhm = _svd(mm)
        k = min(top_k, len(sa))
        layers.append(LayerAnalysis(
            n, float((ma.double() - mb.double()).norm()), float((ma.double() - mm.double()).norm()), sa, sb,
            _align(ua, ub, k), _align(ua, um, k), _align(vha.T, vhb.T, k), _align(vha.T, vhm.T, k)))
    return MatchingAnalysis(tuple(layers))


@dataclass(frozen=True)
class MergeComparison:
    """``rows[method] = (test loss, test accuracy or None)`` of the merged model; ``models``: the
    endpoints' own ``(loss, accuracy)``."""

    rows: dict
    models: tuple

    def table(self) -> str:
        lines = ["| merged by | loss | accuracy |", "|---|---|---|"]
        for name, (loss, acc) in self.rows.items():
            lines.append(f"| {name} | {loss:.4f} | {'-' if acc is None else f'{100 * acc:.2f}%'} |")
        return "\n".join(lines)


def merge_comparison(spec: WeightSpaceSpec, model: torch.nn.Module, models: Sequence[Any], train_data: Any,
                     test_data: Any, *, ste_steps: int = 200, seed: int = 0,
                     loss_fn: Callable | None = None) -> MergeComparison:
    """Merge three or more models by (1) plain averaging, (2) MergeMany weight matching, (3) weight
    matching of every model to the first, and (4) STE (every model aligned to the first with
    ``ste_steps`` steps on ``train_data``), then averaging; evaluate each merge on ``test_data``."""
    from ..merge.barrier import evaluate
    from .merge_many import merge_many
    from .ste import ste_matching
    from .weight_matching import weight_matching

    states = [as_state(m, spec, f"model #{i}") for i, m in enumerate(models)]
    if len(states) < 3:
        raise ValueError(f"merge_comparison compares merges of three or more models, got {len(states)}")
    floating = [n for n in spec.weight_names if states[0][n].is_floating_point()]

    def mean(group):
        out = dict(group[0])
        out.update({n: sum(s[n] for s in group) / len(group) for n in floating})
        return out

    ref, rest = states[0], states[1:]
    merged = {"average (no alignment)": mean(states),
              "weight matching (MergeMany)": merge_many(spec, states, seed=seed).merged,
              "weight matching (to model 0)": mean([ref] + [act(s, spec, weight_matching(spec, ref, s, seed=seed))
                                                            for s in rest]),
              "STE (to model 0)": mean([ref] + [act(s, spec, ste_matching(spec, model, ref, s, train_data,
                                                                          steps=ste_steps, seed=seed))
                                                for s in rest])}
    rows = {k: evaluate(model, v, test_data, loss_fn=loss_fn) for k, v in merged.items()}
    return MergeComparison(rows, tuple(evaluate(model, s, test_data, loss_fn=loss_fn) for s in states))
