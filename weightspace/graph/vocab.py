"""Fixed vocabularies for node types, edge types and activations (stable integer codes)."""
from __future__ import annotations

NODE_TYPES = ("input", "hidden", "output", "norm", "join", "head", "position")
EDGE_TYPES = ("linear", "conv", "embedding", "norm", "affine", "residual", "concat", "gate", "activation",
              "attn_query", "attn_key", "attn_head", "attn_value", "rearrange", "stack", "recurrent_in", "recurrent")
ACTIVATIONS = ("none", "relu", "leaky_relu", "prelu", "gelu", "silu", "tanh", "sigmoid", "sin", "softplus", "elu",
               "selu", "celu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "mish", "softmax", "log_softmax",
               "normalize", "softsign", "other")

NODE = {n: i for i, n in enumerate(NODE_TYPES)}
EDGE = {n: i for i, n in enumerate(EDGE_TYPES)}
ACT = {n: i for i, n in enumerate(ACTIVATIONS)}


def activation_code(ops: list[str]) -> int:
    """The first nonlinearity among the ops applied to a neuron (``none`` if only linear ones)."""
    for op in ops:
        base = op.split("(")[0]
        if base in ACT and base != "none":
            return ACT[base]
        if base in ("clamp",):
            return ACT["hardtanh"]
        if base not in ("mul", "add", "neg", "pad", "sum", "mean", "nansum", "nanmean", "masked_fill", "where",
                        "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "rsub", "pow") \
                and not base.startswith(("max_pool", "avg_pool", "adaptive_", "lp_pool", "fractional_")):
            return ACT["other"]
    return ACT["none"]
