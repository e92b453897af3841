"""Barrier curves, their summary numbers, evaluation and plots."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from weightspace.merge import BarrierCurve, barrier_curve, barrier_table, evaluate, plot_barrier


def test_barrier_numbers_by_hand():
    c = BarrierCurve(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), np.array([1.0, 2.0, 3.0, 2.0, 3.0]),
                     np.array([0.9, 0.8, 0.5, 0.7, 0.7]), "x")
    # linear loss: 1, 1.5, 2, 2.5, 3 -> excess 0, .5, 1, -.5, 0
    assert c.loss_barrier == pytest.approx(1.0)
    assert c.midpoint_loss_barrier == pytest.approx(1.0)
    # linear accuracy: .9, .85, .8, .75, .7 -> deficit 0, .05, .3, .05, 0
    assert c.accuracy_barrier == pytest.approx(0.3)
    assert c.midpoint_accuracy_barrier == pytest.approx(0.3)
    table = barrier_table([c])
    assert "x" in table and "30.00p" in table


def _linear_model():
    m = torch.nn.Linear(2, 2, bias=False)
    return m


def test_evaluate_by_hand():
    m = _linear_model()
    state = {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 3.0]])
    y = torch.tensor([0, 1, 0])
    loss, acc = evaluate(m, state, (x, y), batch_size=2)
    logits = x
    expected = torch.nn.functional.cross_entropy(logits, y).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert acc == pytest.approx(2 / 3)
    # a callable model_fn works too
    loss2, _ = evaluate(lambda s, inp: inp @ s["weight"].T, state, (x, y))
    assert loss2 == pytest.approx(expected, rel=1e-6)


def test_curve_between_equal_networks_is_flat_and_a_png_is_written(tmp_path):
    m = _linear_model()
    a = {"weight": torch.tensor([[1.0, -1.0], [0.5, 2.0]])}
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1))
    c = barrier_curve(m, a, a, (x, y), n=5, label="same")
    assert np.allclose(c.loss, c.loss[0]) and abs(c.loss_barrier) < 1e-6
    calls = []
    barrier_curve(m, a, a, (x, y), n=3, correct=lambda s, t: calls.append(t) or s)
    assert calls == [0.0, 0.5, 1.0]
    path = plot_barrier([c], tmp_path / "b.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_needs_targets():
    with pytest.raises(ValueError, match="targets"):
        evaluate(_linear_model(), {"weight": torch.eye(2)}, torch.randn(3, 2))
