"""Parameter graphs: a CNN with a residual block as a graph, drawn, and inverted exactly."""
from __future__ import annotations

from pathlib import Path

import torch

from ..graph import from_graph, node_permutation, plot_graph, to_graph
from ..space import WeightSpace
from ..spec import WeightSpaceSpec
from ..symmetry import permute, random_permutation
from ._seeded import reinit


def run(out_dir: Path) -> None:
    from ..models import ResidualCNN

    g = torch.Generator().manual_seed(0)
    model = reinit(ResidualCNN(in_channels=1, width=4, num_classes=3), g)
    spec = WeightSpaceSpec.from_module(model, torch.randn(2, 1, 8, 8, generator=g))
    sd = model.state_dict()
    graph = to_graph(sd, spec)
    kinds = torch.bincount(graph.node_type, minlength=7).tolist()
    print(f"ResidualCNN -> graph: {graph.num_nodes} nodes ({kinds[0]} input, {kinds[1]} conv/linear, {kinds[3]} norm, "
          f"{kinds[4]} join, {kinds[2]} output), {graph.num_edges} edges, edge features {tuple(graph.edge_attr.shape)} "
          f"(3x3 kernels), node features {tuple(graph.x.shape)} (BN beta, mean, var)")
    back = from_graph(graph, spec)
    exact = all(torch.equal(back[k][0], sd[k]) for k in sd)
    print(f"from_graph(to_graph(w)) == w bit for bit: {exact}")
    perms = random_permutation(spec, generator=torch.Generator().manual_seed(1))
    moved = to_graph(permute(sd, spec, perms), spec)
    idx = node_permutation(spec, perms)
    print(f"graph of a permuted network == relabeled graph (node features): {torch.equal(moved.x, graph.x[idx])}")
    nets = WeightSpace.from_modules([reinit(ResidualCNN(1, 4, 3), g) for _ in range(64)], spec)
    batch = to_graph(nets)
    print(f"a batch of {batch.num_graphs} networks -> one torch_geometric Batch with {batch.num_nodes} nodes, "
          f"{batch.num_edges} edges")
    path = plot_graph(graph, Path(out_dir) / "graph_residual_cnn.png",
                      title="ResidualCNN parameter graph (a residual block: arcs are identity edges)")
    print(f"wrote the parameter graph PNG to {path.resolve()}")
