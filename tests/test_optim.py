"""Learned optimizers (weightspace.optim): equivariant trajectories, meta-gradients, state dicts, files."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from architectures import ARCHITECTURES
from weightspace.errors import UsageError
from weightspace.nn import WeightSpaceFeatures
from weightspace.optim import LearnedOptimizer, LearnedUpdate
from weightspace.optim.evaluate import Curves
from weightspace.optim.meta_train import _Slot, meta_train, unroll
from weightspace.optim.tasks import TaskFamily, make_classifier
from weightspace.spec.errors import SpecError
from weightspace.testing import assert_equivariant

PERM = ("permutation",)


def _mlp():
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def _cnn_bn():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))


NETS = {"mlp": (_mlp, (8, 6)), "cnn_bn": (_cnn_bn, (8, 2, 6, 6))}
CASES = [("mlp", "unf", "add"), ("mlp", "nfn", "add"), ("mlp", "gmn", "add"), ("mlp", "per-parameter", "add"),
         ("cnn_bn", "unf", "add"), ("cnn_bn", "gmn", "add"), ("mlp", "unf", "scale"), ("cnn_bn", "unf", "scale")]


def _pair(net: str, seed: int = 0):
    """A float64 network, its spec, and the same network moved by a random permutation."""
    build, shape = NETS[net]
    torch.manual_seed(seed)
    model = build().double()
    x = torch.randn(*shape, dtype=torch.float64)
    spec = ws.WeightSpaceSpec.from_module(model, x)
    g = ws.random_element(spec, torch.Generator().manual_seed(seed + 1), kinds=PERM)
    moved = build().double()
    moved.load_state_dict(ws.act(model.state_dict(), spec, g))
    return model, moved, spec, g, x


def _train(model, opt, x, y, steps):
    model.train()
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        trajectory.append({k: v.clone() for k, v in model.state_dict().items()})
    return trajectory


def _rel(a: dict, b: dict, names) -> float:
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-300)) for n in names)


@pytest.mark.parametrize("net,meta_model,form", CASES)
def test_permuted_network_follows_the_permuted_trajectory(net, meta_model, form):
    model, moved, spec, g, x = _pair(net)
    y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    assert _rel(moved.state_dict(), model.state_dict(), spec.weight_names) > 0.1    # the permutation moves weights
    opt = LearnedOptimizer(model, spec, meta_model, lr=0.05, mix=1.0, form=form)
    opt_moved = LearnedOptimizer(moved, spec, meta_model, lr=0.05, mix=1.0, form=form)
    opt_moved.rule.load_state_dict(opt.rule.state_dict())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ours, theirs = _train(model, opt, x, y, 10), _train(moved, opt_moved, x, y, 10)
    for a, b in zip(ours, theirs):
        assert _rel(b, ws.act(a, spec, g), spec.weight_names) < 1e-8
    assert _rel(ours[-1], start, opt.names) > 1e-3                        # the optimizer moved the weights
    stats = [n for n in spec.weight_names if n not in opt.names]
    assert (net == "cnn_bn") == bool(stats)                               # BN running stats: features only


def _rule_as_function(rule: LearnedUpdate, spec):
    def fn(feats):
        t = feats.tensors
        weights = {n: t[n][:, 0] for n in spec.weight_names}
        grads = {n: t[n][:, 1] for n in spec.weight_names if spec[n].role == "parameter"}
        updates, _ = rule(weights, grads, rule.init_state(grads))
        return WeightSpaceFeatures(spec, {n: (updates[n] if n in updates else 0 * weights[n]).unsqueeze(1)
                                          for n in spec.weight_names})
    return fn


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.name in ("mlp_norms", "vgg_bn", "resnet20",
                                                                         "tiny_transformer")],
                         ids=lambda a: a.name)
def test_the_update_rule_is_equivariant_on_traced_architectures(arch, traced_arch):
    _, _, spec = traced_arch(arch)
    torch.manual_seed(0)
    rule = LearnedUpdate(spec, "unf", channels=(4,), mix=1.0).double()
    gen = torch.Generator().manual_seed(3)
    feats = WeightSpaceFeatures(spec, {n: torch.randn(1, 2, *spec[n].shape, generator=gen, dtype=torch.float64)
                                       for n in spec.weight_names})
    assert_equivariant(_rule_as_function(rule, spec), spec, feats, kinds=PERM, trials=2, rtol=1e-8)


def _tiny_family():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return TaskFamily(x, y, "mlp", (5,), depth=1, batch_size=32)


@pytest.mark.parametrize("meta_model", ["unf", "per-parameter", "gmn"])
def test_one_meta_step_lowers_the_meta_loss_and_reaches_every_meta_parameter(meta_model):
    family = _tiny_family()
    torch.manual_seed(0)
    rule = LearnedUpdate(family.module(5)[1], meta_model, lr=0.05, mix=1.0)
    master = dict(rule.named_parameters())

    def meta_loss():
        slot = _Slot(family, rule, 5, [0, 1])
        return unroll(family, rule, master, slot, 4, torch.Generator().manual_seed(1))

    before = meta_loss()
    grads = torch.autograd.grad(before, list(master.values()))
    for (name, _), g in zip(master.items(), grads):
        assert g.abs().sum() > 0, f"no meta-gradient reaches {name}"
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(master.values(), grads):
            p -= 1e-2 * g / norm
    after = meta_loss()
    assert float(after.detach()) < float(before.detach())


def test_state_dict_round_trip_and_identical_continuation(tmp_path):
    _, shape = NETS["cnn_bn"]
    torch.manual_seed(0)
    a, x = _cnn_bn(), torch.randn(*shape)
    y = torch.randint(0, 3, (shape[0],), generator=torch.Generator().manual_seed(1))
    spec = ws.WeightSpaceSpec.from_module(a, x)
    opt = LearnedOptimizer(a, spec, "unf", channels=(4,), mix=1.0)
    _train(a, opt, x, y, 3)
    torch.save({"model": a.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)             # data, never code
    b = _cnn_bn()
    b.load_state_dict(saved["model"])
    opt_b = LearnedOptimizer(b, spec, "unf", channels=(4,))                 # other meta-weights until loaded
    opt_b.load_state_dict(saved["opt"])
    sd_a, sd_b = opt.state_dict(), opt_b.state_dict()
    assert set(sd_a["state"]) == set(sd_b["state"]) and sd_a["state"]
    for k in sd_a["state"]:
        for key, v in sd_a["state"][k].items():
            assert torch.equal(v, sd_b["state"][k][key])
    ours, theirs = _train(a, opt, x, y, 4), _train(b, opt_b, x, y, 4)
    for s1, s2 in zip(ours, theirs):
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(ours[-1]["0.weight"], ours[0]["0.weight"])


def test_from_pretrained_serves_other_widths_and_refuses_other_architectures(tmp_path):
    family = TaskFamily(torch.randn(16, 6), torch.arange(16) % 3, "mlp", (5, 9), depth=2)
    rule = LearnedUpdate(family.module(5)[1], "unf", channels=(4,), form="scale")
    path = rule.save(tmp_path / "rule.safetensors")
    m9, spec9 = make_classifier("mlp", 9, (6,), 3, 2), family.module(9)[1]
    opt = LearnedOptimizer.from_pretrained(path, m9, spec9)
    assert torch.equal(opt.rule.log_lr, rule.log_lr) and opt.rule.form == "scale"
    opt.zero_grad()
    F.cross_entropy(m9(family.x), family.y).backward()
    before = m9[0].weight.clone()
    opt.step()
    assert not torch.equal(before, m9[0].weight)
    deeper = make_classifier("mlp", 5, (6,), 3, 3)
    with pytest.raises(UsageError, match="another architecture"):
        LearnedOptimizer.from_pretrained(path, deeper, ws.WeightSpaceSpec.from_module(deeper, family.x[:2]))


def test_bad_input_names_what_is_wrong():
    model, _, spec, _, x = _pair("mlp")
    with pytest.raises(UsageError, match="unknown meta-model 'adamw'"):
        LearnedOptimizer(model, spec, "adamw")
    with pytest.raises(UsageError, match="form must be 'add' or 'scale'"):
        LearnedOptimizer(model, spec, "unf", form="multiply")
    other = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(UsageError, match="not in the spec|has no entry"):
        LearnedOptimizer(other, spec)
    cnn, _, cspec, _, _ = _pair("cnn_bn")
    with pytest.raises(SpecError, match="'norm' op"):
        LearnedOptimizer(cnn, cspec, "nfn")
    with pytest.raises(UsageError, match="cannot be rebuilt"):
        LearnedUpdate(spec, nn.Identity()).save("unused.safetensors")


def test_meta_train_checkpoints_and_resumes(tmp_path):
    family = _tiny_family()
    ckpt = tmp_path / "meta.ckpt"
    first = meta_train(family, "per-parameter", meta_steps=3, unroll_steps=2, horizon=4, tasks=2, checkpoint=ckpt,
                       every=3, progress=False, hidden=8, layers=1)
    assert len(first.meta_losses) == 3 and ckpt.is_file()
    resumed = meta_train(family, "per-parameter", meta_steps=5, unroll_steps=2, horizon=4, tasks=2, checkpoint=ckpt,
                         every=3, progress=False, hidden=8, layers=1)
    assert resumed.meta_losses[:3] == first.meta_losses and len(resumed.meta_losses) == 5
    assert not torch.equal(resumed.rule.net.net[0].weight, first.rule.net.net[0].weight)


def test_curves_table_counts_steps_to_the_reference():
    adam = torch.tensor([[2.0, 1.0, 0.5, 0.4, 0.3, 0.2], [2.0, 1.0, 0.5, 0.4, 0.3, 0.2]])
    fast = torch.tensor([[2.0, 0.4, 0.2, 0.1, 0.1, 0.1], [2.0, 0.6, 0.4, 0.1, 0.1, 0.1]])
    curves = Curves({"adam": adam, "fast": fast}, horizon=1)
    assert curves.steps_to("adam", 1.0) == 1 and curves.steps_to("fast", 0.4) == 2
    assert curves.steps_to("fast", 0.01) is None
    table = curves.table()
    assert "fast" in table and "1.00x" in table


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_image_family_reads_idx_files_pooled_and_standardized(tmp_path, kind):
    """MNIST-format files (written here) become 8x8 tasks, standardized with the training split."""
    from test_data_images import make_idx_dataset

    from weightspace.optim import image_family

    parts = make_idx_dataset(tmp_path, n_train=12, n_test=4, gz=True)
    fam = image_family("fashion-mnist", str(tmp_path), kind, widths=(8,), size=8)
    assert fam.x.shape == ((12, 64) if kind == "mlp" else (12, 1, 8, 8))
    assert abs(float(fam.x.mean())) < 1e-5 and abs(float(fam.x.std()) - 1) < 1e-4
    assert fam.y.tolist() == parts["train"][1].tolist()
    raw = F.adaptive_avg_pool2d(torch.tensor(parts["train"][0], dtype=torch.float32).unsqueeze(1) / 255, 8)
    assert torch.allclose(fam.x.reshape(12, -1)[0, 0] * raw.std() + raw.mean(), raw[0, 0, 0, 0], atol=1e-5)
    test = image_family("fashion-mnist", str(tmp_path), kind, widths=(8,), split="test")
    assert len(test.y) == 4
    module, spec = test.module(8)
    assert module(test.x[:2]).shape == (2, 10)
    with pytest.raises(UsageError, match="size"):
        image_family("fashion-mnist", str(tmp_path), size=0)
