"""Weight-space specs traced with torch.fx, and their symmetries checked on real models."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..space import WeightSpace
from ..spec import WeightSpaceSpec
from ..symmetry import flip_sign, permute, random_permutation, random_scaling, random_sign_flip, scale
from ._seeded import reinit


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def symmetry_demo(name: str, model: torch.nn.Module, x: torch.Tensor, seed: int = 0, show_spec: bool = True) -> dict:
    """Trace ``model``, apply a random group element, and measure how much the output moves."""
    model.eval()
    t0 = time.perf_counter()
    spec = WeightSpaceSpec.from_module(model, x)
    traced_s = time.perf_counter() - t0
    if show_spec:
        print(spec)
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    moved = permute(sd, spec, random_permutation(spec, generator=g))
    moved = scale(moved, spec, random_scaling(spec, generator=g))
    moved = flip_sign(moved, spec, random_sign_flip(spec, generator=g))
    with torch.no_grad():
        y0 = model(x)
        model.load_state_dict(moved)
        y1 = model(x)
        model.load_state_dict(sd)
    space = WeightSpace.from_state_dicts([sd, moved], spec)
    flat = space.flatten()
    weight_change = ((flat[0] - flat[1]).norm() / flat[0].norm()).item()
    out = {"model": name, "tensors": len(spec.params), "weights": spec.num_weights, "groups": len(spec.groups),
           "scalings": len(spec.scalings), "trace_s": traced_s, "output_change": _rel(y0, y1),
           "weight_change": weight_change}
    print(f"\n[{name}] traced in {traced_s * 1000:.0f} ms: {out['groups']} permutation groups, "
          f"{out['scalings']} scaling symmetries over {out['weights']:,} weights")
    print(f"[{name}] random group element: weights moved by {weight_change:.3f} (relative L2), "
          f"outputs changed by {out['output_change']:.2e} (relative max, float32)")
    return out


def run(out_dir: Path) -> list[dict]:
    from ..models import TinyTransformer, resnet20

    g = torch.Generator().manual_seed(0)
    results = []
    resnet = reinit(resnet20(num_classes=10, width=8), g)
    results.append(symmetry_demo("ResNet-20 (width 8)", resnet, torch.randn(4, 3, 32, 32, generator=g)))
    tr = reinit(TinyTransformer(in_features=16, seq_len=8, dim=32, heads=4, depth=2), g)
    results.append(symmetry_demo("Transformer (2 layers, 4 heads)", tr, torch.randn(4, 8, 16, generator=g)))
    print("\nSummary")
    print(f"{'model':34s} {'weights':>9s} {'groups':>7s} {'scalings':>9s} {'weight change':>14s} "
          f"{'output change':>14s}")
    for r in results:
        print(f"{r['model']:34s} {r['weights']:9,d} {r['groups']:7d} {r['scalings']:9d} {r['weight_change']:14.3f} "
              f"{r['output_change']:14.2e}")
    return results
