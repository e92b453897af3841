"""Git Re-Basin on digits: two MLPs from different seeds, aligned by weight matching, then merged"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..align import endpoint_statistics, repair, weight_matching
from ..data.digits import digits, train_classifier
from ..merge import barrier_curve, barrier_table, plot_barrier
from ..models import mlp
from ..spec import WeightSpaceSpec
from ..symmetry import permute
from ._seeded import reinit

WIDTHS = [64, 128, 128, 10]


def run(out_dir: Path) -> dict:
    (x_train, y_train), (x_test, y_test) = digits()
    print(f"digits: {len(y_train)} training and {len(y_test)} test images (8x8, scikit-learn)")
    models = []
    t0 = time.perf_counter()
    for seed in (0, 1):
        model = reinit(mlp(WIDTHS), torch.Generator().manual_seed(seed))
        models.append(train_classifier(model, x_train, y_train, epochs=30, seed=seed))
    print(f"trained two MLPs {'-'.join(map(str, WIDTHS))} from seeds 0 and 1 in {time.perf_counter() - t0:.1f} s")

    model = models[0]
    spec = WeightSpaceSpec.from_module(model, x_train[:2])
    a, b = models[0].state_dict(), models[1].state_dict()
    t0 = time.perf_counter()
    info: dict = {}
    perms = weight_matching(spec, a, b, info=info)
    seconds = time.perf_counter() - t0
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
    print(f"weight matching: {seconds * 1000:.0f} ms, {info['sweeps']} sweeps, moved {moved} of "
          f"{sum(g.size for g in spec.groups)} hidden neurons")
    aligned = permute(b, spec, perms)

    test = (x_test, y_test)
    stats = endpoint_statistics(model, [a, aligned], x_train, spec=spec)
    curves = [
        barrier_curve(model, a, b, test, label="naive (no alignment)"),
        barrier_curve(model, a, aligned, test, label="weight matching"),
        barrier_curve(model, a, aligned, test, label="weight matching + REPAIR",
                      correct=lambda s, t: repair(model, s, None, x_train, weights=(1 - t, t), spec=spec,
                                                  statistics=stats)),
    ]
    print("\nLoss and accuracy on the test images along (1 - alpha) A + alpha B:")
    print(barrier_table(curves, [None, seconds, None]))
    naive, wm = curves[0], curves[1]
    print(f"\nmidpoint: loss {naive.at(0.5):.3f} -> {wm.at(0.5):.3f} after alignment "
          f"(barrier {naive.midpoint_loss_barrier:.3f} -> {wm.midpoint_loss_barrier:.3f}); accuracy "
          f"{100 * naive.at(0.5, 'accuracy'):.1f}% -> {100 * wm.at(0.5, 'accuracy'):.1f}% "
          f"(barrier {100 * naive.midpoint_accuracy_barrier:.1f} -> {100 * wm.midpoint_accuracy_barrier:.1f} points)")
    path = plot_barrier(curves, Path(out_dir) / "merge_barrier.png",
                        title="Two digit MLPs: linear path before and after alignment")
    print(f"barrier plot written to {path.resolve()}")
    return {"curves": curves, "plot": path}
