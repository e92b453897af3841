"""Draw a small network's parameter graph: layers left to right, edges coloured by weight."""
from __future__ import annotations

from pathlib import Path

import torch

from .vocab import EDGE, NODE_TYPES

_NODE_COLOURS = {"input": "#2b8cbe", "hidden": "#525252", "output": "#e34a33", "norm": "#31a354",
                 "join": "#bdbdbd", "head": "#756bb1", "position": "#2b8cbe"}
_WEIGHT_EDGES = {EDGE[k] for k in ("linear", "conv", "embedding")}
_DIAGONAL_EDGES = {EDGE[k] for k in ("norm", "affine")}


def plot_graph(graph, path: str | Path, title: str | None = None, max_edges: int = 20000) -> Path:
    """Write a PNG of one graph (a ``Data``, or the first graph of a ``Batch``) and return its path.

    Columns are the nodes' ``layer`` depth; nodes of one depth are stacked by site. Weight edges are
    coloured by their value (the mean of a kernel), blue negative to red positive; parameter-free
    edges (residuals, attention, concatenation) are thin grey lines."""
    from torch_geometric.utils import cumsum

    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure          # drawn without pyplot: no backend or global state touched

    if hasattr(graph, "num_graphs"):
        graph = graph.get_example(0)
    layer, site = graph.layer.long(), graph.site.long()       # narrow dtypes in graphs: widen before arithmetic
    n = layer.numel()
    # stack nodes of a depth by (site, index); centre each column
    key = layer * (n + 1) + torch.where(site >= 0, site, n)
    order = torch.argsort(key * (n + 1) + torch.arange(n), stable=True)
    y = torch.empty(n)
    counts = torch.bincount(layer, minlength=int(layer.max()) + 1)
    rank = torch.empty(n, dtype=torch.long)
    sorted_layer = layer[order]
    first = cumsum(counts)[:-1]
    rank[order] = torch.arange(n) - first[sorted_layer]
    y = (rank.float() - (counts[layer].float() - 1) / 2) / counts.max().clamp_min(1).float()
    xpos = layer.float()
    ei, ea = graph.edge_index, graph.edge_attr
    value = ea.sum(1) / graph.edge_len.clamp_min(1).float()
    kind = graph.edge_type
    if ei.shape[1] > max_edges:
        keep = torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(0))[:max_edges]
        ei, value, kind = ei[:, keep], value[keep], kind[keep]
    weight = torch.tensor([int(t) in _WEIGHT_EDGES for t in kind.tolist()], dtype=torch.bool)
    diagonal = torch.tensor([int(t) in _DIAGONAL_EDGES for t in kind.tolist()], dtype=torch.bool)
    fig = Figure(figsize=(max(6, 1.3 * (int(layer.max()) + 1)), 7))
    ax = fig.add_subplot()
    paths = _edge_paths(xpos, y, ei)
    ax.add_collection(LineCollection([paths[i] for i in (~weight & ~diagonal).nonzero().flatten().tolist()],
                                     colors="#b0b0b0", linewidths=0.6, zorder=1, label="identity / attention"))
    ax.add_collection(LineCollection([paths[i] for i in diagonal.nonzero().flatten().tolist()], colors="#31a354",
                                     linewidths=1.2, zorder=1, alpha=0.6))
    vmax = float(value[weight].abs().quantile(0.98)) if bool(weight.any()) else 1.0
    lc = LineCollection([paths[i] for i in weight.nonzero().flatten().tolist()], cmap="coolwarm", linewidths=0.8,
                        zorder=2, alpha=0.9)
    lc.set_array(value[weight].numpy())
    lc.set_clim(-vmax, vmax)
    ax.add_collection(lc)
    for t, name in enumerate(NODE_TYPES):
        m = graph.node_type == t
        if bool(m.any()):
            ax.scatter(xpos[m], y[m], s=14, c=_NODE_COLOURS[name], label=name, zorder=3, edgecolors="none")
    fig.colorbar(lc, ax=ax, label="weight (kernel mean); green: norm / scale, grey: identity", fraction=0.03)
    ax.legend(loc="upper left", fontsize=7, frameon=False, ncol=4)
    ax.set_xlabel("layer (depth in the dataflow)")
    ax.set_yticks([])
    ax.set_xlim(-0.5, float(layer.max()) + 0.5)
    top = max((pt[1] for path in paths for pt in path), default=0.5)
    ax.set_ylim(-0.6, max(0.6, top + 0.08))
    ax.set_title(title or f"parameter graph: {n} nodes, {graph.edge_index.shape[1]} edges")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def _edge_paths(x: torch.Tensor, y: torch.Tensor, ei: torch.Tensor) -> list:
    """Straight lines between adjacent layers; arcs above the columns for edges that skip layers."""
    x0, x1, y0, y1 = x[ei[0]], x[ei[1]], y[ei[0]], y[ei[1]]
    span = (x1 - x0).abs()
    t = torch.linspace(0, 1, 12)
    xs = x0[:, None] + (x1 - x0)[:, None] * t
    bulge = torch.where(span > 1, 0.08 * span, torch.zeros_like(span))
    ys = y0[:, None] + (y1 - y0)[:, None] * t + bulge[:, None] * 4 * t * (1 - t)
    return [list(zip(a, b)) for a, b in zip(xs.tolist(), ys.tolist())]
