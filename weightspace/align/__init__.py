"""Alignment of networks modulo their permutation symmetries (Git Re-Basin and successors), for any
traced spec: weight matching, activation matching, the straight-through estimator, Sinkhorn
Re-Basin, MergeMany; BatchNorm reset and REPAIR after merging."""
from .activation_matching import activation_matching
from .analysis import LayerAnalysis, MatchingAnalysis, MergeComparison, matching_analysis, merge_comparison
from .bn import reset_bn_statistics
from .merge_many import MergeManyResult, merge_many
from .repair import endpoint_statistics, repair, repair_points
from .sinkhorn import sinkhorn_matching
from .ste import ste_matching
from .trees import tree_activation_matching, tree_matching, tree_merge_many
from .weight_matching import weight_matching

__all__ = ["weight_matching", "activation_matching", "ste_matching", "sinkhorn_matching", "merge_many",
           "MergeManyResult", "reset_bn_statistics", "repair", "endpoint_statistics", "repair_points",
           "tree_matching", "tree_activation_matching", "tree_merge_many", "matching_analysis", "merge_comparison",
           "MatchingAnalysis", "LayerAnalysis", "MergeComparison"]
