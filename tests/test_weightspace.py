"""The WeightSpace container, batched group actions and checkpoints."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from weightspace.models import SIREN, resnet20


@pytest.fixture(scope="module")
def sirens():
    spec = ws.WeightSpaceSpec.from_module(SIREN(), torch.rand(4, 2))
    torch.manual_seed(0)
    nets = [SIREN() for _ in range(6)]
    return spec, nets, ws.WeightSpace.from_modules(nets, spec)


def test_state_dict_round_trip(sirens):
    spec, nets, space = sirens
    assert len(space) == 6 and space.batch_size == 6
    for net, sd in zip(nets, space.to_state_dicts()):
        assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())


def test_flatten_unflatten(sirens):
    spec, _, space = sirens
    flat = space.flatten()
    assert flat.shape == (6, spec.num_weights) == (6, 2 * 32 + 32 + 32 * 32 + 32 + 32 + 1)
    back = ws.WeightSpace.unflatten(flat, spec)
    assert all(torch.equal(back[k], space[k]) for k in spec.names)


def test_arithmetic_indexing_and_dtype(sirens):
    spec, _, space = sirens
    mid = (space[0:3] + space[3:6]) / 2
    assert torch.allclose(mid["layers.0.weight"], (space["layers.0.weight"][:3] + space["layers.0.weight"][3:]) / 2)
    assert torch.allclose((space - space).flatten(), torch.zeros_like(space.flatten()))
    assert torch.allclose((2 * space).flatten(), space.flatten() * 2)
    w = torch.arange(6.0)
    assert torch.allclose((space * w).flatten(), space.flatten() * w[:, None])
    assert torch.allclose(sum([space, space]).flatten(), (space + space).flatten())
    assert len(space[2]) == 1 and len(space[torch.tensor([0, 5])]) == 2
    assert torch.equal(space[2]["layers.1.bias"][0], space["layers.1.bias"][2])
    assert space.to(torch.float64).dtype == torch.float64
    assert ws.WeightSpace.cat([space[:2], space[2:]]).flatten().equal(space.flatten())
    with pytest.raises(ws.SpecError):
        space * torch.ones(4)


def test_arithmetic_keeps_buffers():
    model = resnet20(width=4)
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(2, 3, 8, 8))
    space = ws.WeightSpace.from_modules([model, model], spec)
    doubled = space + space
    assert torch.equal(doubled["stem.1.num_batches_tracked"], space["stem.1.num_batches_tracked"])
    assert torch.equal(doubled["stem.1.running_var"], 2 * space["stem.1.running_var"])
    assert "stem.1.num_batches_tracked" not in spec.weight_names


def test_mismatched_specs_name_the_first_difference(sirens):
    spec, _, space = sirens
    other_spec = ws.WeightSpaceSpec.from_module(SIREN(hidden=(32, 16)), torch.rand(4, 2))
    other = ws.WeightSpace.from_modules([SIREN(hidden=(32, 16))], other_spec)
    with pytest.raises(ws.SpecError, match="layers.1.weight"):
        space[:1] + other


def test_batched_permutation_equals_per_network(sirens):
    spec, nets, space = sirens
    g = torch.Generator().manual_seed(0)
    perms = ws.random_permutation(spec, generator=g, batch_size=6)
    moved = ws.permute(space, spec, perms)
    for i in range(6):
        single = ws.permute(nets[i].state_dict(), spec, {k: v[i] for k, v in perms.items()})
        assert all(torch.equal(moved[k][i], single[k]) for k in spec.names)
    shared = ws.random_permutation(spec, generator=g)
    moved = ws.permute(space, spec, shared)
    x = torch.rand(10, 2)
    net = SIREN()
    for i in range(6):
        net.load_state_dict(moved.state_dict(i))
        assert torch.allclose(net(x), nets[i](x), atol=1e-5)


def test_batched_scaling_and_sign_flip(sirens):
    spec, nets, space = sirens
    g = torch.Generator().manual_seed(1)
    flips = ws.random_sign_flip(spec, generator=g, batch_size=6)
    moved = ws.flip_sign(space, spec, flips)
    x = torch.rand(10, 2)
    net = SIREN()
    for i in range(6):
        net.load_state_dict(moved.state_dict(i))
        assert torch.allclose(net(x), nets[i](x), atol=1e-5)
    assert not torch.equal(moved.flatten(), space.flatten())


def test_checkpoints(tmp_path, sirens):
    spec, nets, space = sirens
    sd = nets[0].state_dict()
    for name in ("a.safetensors", "b.pt"):
        path = ws.save_checkpoint(sd, tmp_path / name)
        loaded = ws.load_checkpoint(path)
        assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    assert set(ws.load_checkpoint(tmp_path / "wrapped.pt")) == set(sd)
    ws.save_checkpoint(space[1], tmp_path / "one.safetensors")
    assert torch.equal(ws.load_checkpoint(tmp_path / "one.safetensors")["layers.0.weight"], space["layers.0.weight"][1])


def test_corrupt_checkpoints_name_the_file(tmp_path, sirens):
    _, nets, _ = sirens
    good = ws.save_checkpoint(nets[0].state_dict(), tmp_path / "w.safetensors")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ws.CheckpointError, match="trunc.safetensors"):
        ws.load_checkpoint(trunc)
    pt = ws.save_checkpoint(nets[0].state_dict(), tmp_path / "w.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(pt.read_bytes()[:100])
    with pytest.raises(ws.CheckpointError, match="cut.pt"):
        ws.load_checkpoint(cut)
    code = tmp_path / "code.pt"
    torch.save(nets[0], code)  # a pickled module: code, refused by weights_only loading
    with pytest.raises(ws.CheckpointError, match="code.pt"):
        ws.load_checkpoint(code)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ws.load_checkpoint(tmp_path / "missing.pt")
