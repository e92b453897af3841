"""Parameter graphs: networks as torch_geometric graphs, and back."""
from .build import from_graph, node_permutation, to_graph
from .plan import GraphPlan, graph_plan
from .plot import plot_graph
from .probe import probe_features

__all__ = ["to_graph", "from_graph", "node_permutation", "graph_plan", "GraphPlan", "plot_graph", "probe_features"]
