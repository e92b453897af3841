"""INR editing: dilation targets and the editing task's rendering against known answers, an equivariant
editor's delta permuting with its input, N-D targets files, and a smoke run of examples/inr_editing.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightspace import WeightSpace
from weightspace.data import generate_inr_zoo, load_images, render_inrs, siren_spec
from weightspace.errors import UsageError
from weightspace.nn import NFN, UNF
from weightspace.symmetry import random_element
from weightspace.train import delta_scales, dilation_targets, editing_task, read_targets, render_siren

ROOT = Path(__file__).resolve().parents[1]


def sirens(n=5, hidden=(8, 8), seed=0, dtype=torch.float64):
    spec = siren_spec(hidden)
    g = torch.Generator().manual_seed(seed)
    return WeightSpace(spec, {p.name: (0.3 * torch.randn(n, *p.shape, generator=g)).to(dtype) for p in spec.params})


def test_dilation_against_a_hand_computed_answer():
    img = torch.zeros(1, 4, 5)
    img[0, 1, 1] = 1.0            # a single pixel grows into the 3x3 square around it
    img[0, 3, 4] = 0.5            # a corner pixel: only the neighbours inside the image
    img[0, 0, 4] = 0.25
    want = torch.tensor([[1.0, 1.0, 1.0, 0.25, 0.25],
                         [1.0, 1.0, 1.0, 0.25, 0.25],
                         [1.0, 1.0, 1.0, 0.5, 0.5],
                         [0.0, 0.0, 0.0, 0.5, 0.5]])
    assert torch.equal(dilation_targets(img)[0], want)
    assert torch.equal(dilation_targets(img.unsqueeze(1))[:, 0], dilation_targets(img))   # [N, C, H, W] too
    assert torch.equal(dilation_targets(img, kernel_size=1), img)
    with pytest.raises(ValueError, match="odd"):
        dilation_targets(img, kernel_size=2)


def test_zero_edit_renders_the_input_and_a_bias_edit_shifts_it():
    w = sirens(dtype=torch.float32)                          # render_inrs computes in float32
    task = editing_task((6, 7), w0=30.0, output_offset=0.5, delta_scale=0.1)
    zero = w * 0.0
    ref = render_inrs(w, (6, 7), 30.0, 0.5)
    assert torch.allclose(task.predict(zero, w), ref, atol=1e-6)
    bump = WeightSpace(w.spec, {n: torch.zeros_like(t) for n, t in w.tensors.items()})
    bump.tensors["layers.2.bias"] += 2.0                     # last bias + 2 * 0.1: the picture + 0.2
    assert torch.allclose(task.predict(bump, w), ref + 0.2, atol=1e-5)
    assert task.out_features is None and not task.higher_is_better and task.primary == "mse"
    y = torch.zeros_like(ref)
    assert torch.allclose(task.loss(ref.double(), y), (ref.double() ** 2).flatten(1).mean(1))
    assert task.metrics(ref, y)["mse"] == pytest.approx(float((ref.double() ** 2).mean()))
    per_tensor = editing_task((6, 7), delta_scale={n: 0.0 for n in w.spec.weight_names})
    assert torch.allclose(per_tensor.predict(bump, w), ref, atol=1e-6)


def test_rendering_is_differentiable_in_the_weights():
    w = sirens(n=2, dtype=torch.float32).map(lambda t: t.clone().requires_grad_(True))
    render_siren(w, (4, 4)).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in w.tensors.values())


@pytest.mark.parametrize("make", [lambda s: UNF(s, (4, 4), None), lambda s: NFN(s, (4, 4), None, mode="hnp")])
def test_equivariant_editor_delta_permutes_with_its_input(make):
    w = sirens(n=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make(w.spec).double()
    g = random_element(w.spec, torch.Generator().manual_seed(1), batch_size=4, kinds=("permutation",))
    gw = g.act(w)
    assert not torch.allclose(gw["layers.1.weight"], w["layers.1.weight"])          # the weights moved
    with torch.no_grad():
        delta, moved = model(w), model(gw)
    assert float(delta["layers.1.weight"].std()) > 1e-3                               # not a constant output
    for n in w.spec.weight_names:
        assert torch.allclose(moved[n], g.act(delta)[n], atol=1e-10), n
    task = editing_task((5, 5), delta_scale=0.05)                    # so the edited picture is invariant
    assert torch.allclose(task.predict(moved, gw), task.predict(delta, w), atol=1e-8)


def test_targets_files_of_images(tmp_path):
    f = tmp_path / "images.safetensors"
    save_file({"targets": torch.rand(6, 1, 3, 3)}, str(f))
    assert read_targets(f, 6, ndim=None).shape == (6, 1, 3, 3)
    with pytest.raises(UsageError, match=r"expected one tensor of shape \[6\]"):
        read_targets(f, 6)
    with pytest.raises(UsageError, match="holds 6 targets but the zoo has 5"):
        read_targets(f, 5, ndim=None)


def test_delta_scales_are_a_fraction_of_each_tensors_spread():
    w = sirens(n=50)
    s = delta_scales(w, 0.5)
    assert set(s) == set(w.spec.weight_names)
    assert s["layers.1.weight"] == pytest.approx(0.5 * float(w["layers.1.weight"].std()))


def test_inr_editing_example_runs(tmp_path):
    x, y = load_images("digits")
    zoo = tmp_path / "zoo"
    splits = {"train": list(range(32)), "val": list(range(32, 40)), "test": list(range(40, 48))}
    generate_inr_zoo(zoo, x[:48], y[:48], splits=splits, steps=20, hidden=(8, 8), shard_size=48, progress=False,
                     source={"name": "digits"})
    spec = importlib.util.spec_from_file_location("inr_editing", ROOT / "examples" / "inr_editing.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "out"
    assert example.main(["--zoo", str(zoo), "--out", str(out), "--epochs", "2", "--batch-size", "16",
                         "--model-options", '{"nfn-np": {"channels": [4]}, "flat-mlp": {"hidden": [16]}}',
                         "--show", "3"]) == 0
    text = (out / "results.md").read_text()
    assert "no edit" in text and "| nfn-np |" in text and "| flat-mlp |" in text
    assert (out / "editing.png").stat().st_size > 0
