"""WeightSpace datasets: samples, collation, normalization statistics, deterministic splits."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from weightspace.data import NormStats, WeightDataset, collate_weights, normalization_stats, split_indices
from weightspace.models import SIREN


@pytest.fixture(scope="module")
def sirens():
    spec = ws.WeightSpaceSpec.from_module(SIREN(), torch.rand(4, 2))
    torch.manual_seed(0)
    space = ws.WeightSpace.from_modules([SIREN() for _ in range(20)], spec)
    return space, torch.arange(20) % 10


def test_items_and_batches(sirens):
    space, labels = sirens
    ds = WeightDataset(space, labels, indices=[3, 5, 7, 9])
    w, t = ds[1]
    assert w.batch_size == 1 and t == 5
    assert torch.equal(w["layers.1.weight"][0], space["layers.1.weight"][5])
    batch = collate_weights([ds[i] for i in range(4)])
    assert batch.weights.batch_size == 4 and batch.targets.tolist() == [3, 5, 7, 9]
    batches = list(ds.loader(batch_size=3, shuffle=True, seed=0))
    assert [len(b) for b in batches] == [3, 1]
    seen = torch.cat([b.targets for b in batches]).sort().values.tolist()
    assert seen == [3, 5, 7, 9]
    again = list(ds.loader(batch_size=3, shuffle=True, seed=0))
    assert all(torch.equal(a.targets, b.targets) for a, b in zip(batches, again))
    w, t = batches[0]                                                   # a batch unpacks as a pair
    assert torch.equal(w["layers.0.bias"], space["layers.0.bias"][t])
    with pytest.raises(IndexError):
        ds[4]


def test_graph_batches_carry_the_networks_and_their_targets(sirens):
    space, labels = sirens
    ds = WeightDataset(space, labels, indices=[2, 4, 6, 8, 11])
    batches = list(ds.loader(batch_size=2, shuffle=True, seed=1, graph=True))
    assert [b.num_graphs for b in batches] == [2, 2, 1]
    plain = list(ds.loader(batch_size=2, shuffle=True, seed=1))
    for graphs, (w, t) in zip(batches, plain):
        assert torch.equal(graphs.y, t)
        back = ws.from_graph(graphs, space.spec)                        # the graphs hold exactly these networks
        assert all(torch.equal(back[k], v) for k, v in w.items())


def test_normalization_statistics(sirens):
    space, labels = sirens
    stats = normalization_stats(space)
    normed = stats.apply(space)
    for name in space.spec.weight_names:
        t = normed[name].double()
        assert abs(t.mean().item()) < 1e-5 and abs(t.std(unbiased=False).item() - 1) < 1e-4
    back = stats.invert(normed)
    assert all(torch.allclose(back[k], space[k], atol=1e-6) for k in space.spec.weight_names)
    # per-tensor statistics commute with the permutation symmetry
    perms = ws.random_permutation(space.spec, generator=torch.Generator().manual_seed(0))
    moved = ws.WeightSpace.from_state_dicts([ws.permute(sd, space.spec, perms) for sd in space.to_state_dicts()],
                                            space.spec)
    moved_then_normed = stats.apply(moved)
    normed_then_moved = [ws.permute(sd, space.spec, perms) for sd in normed.to_state_dicts()]
    assert all(torch.allclose(moved_then_normed[k][i], sd[k], atol=1e-6)
               for i, sd in enumerate(normed_then_moved) for k in sd)
    el = normalization_stats(space, mode="element")
    assert el.mean["layers.1.weight"].shape == (32, 32)
    assert torch.allclose(el.apply(space)["layers.1.weight"].mean(0), torch.zeros(32, 32), atol=1e-5)
    re = NormStats.from_state_dict(stats.state_dict())
    assert torch.equal(re.apply(space)["layers.2.bias"], normed["layers.2.bias"])
    ds = WeightDataset(space, labels, normalize=stats)
    assert torch.allclose(ds[2][0]["layers.0.weight"][0], normed["layers.0.weight"][2])


def test_deterministic_splits():
    a = split_indices(100, {"train": -1, "val": 10, "test": 0.2}, seed=1)
    b = split_indices(100, {"train": -1, "val": 10, "test": 0.2}, seed=1)
    c = split_indices(100, {"train": -1, "val": 10, "test": 0.2}, seed=2)
    assert {k: len(v) for k, v in a.items()} == {"train": 70, "val": 10, "test": 20}
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["val"], c["val"])
    assert torch.equal(torch.cat(list(a.values())).sort().values, torch.arange(100))
    with pytest.raises(ValueError):
        split_indices(10, {"a": 8, "b": 5})


def test_indices_out_of_range_are_refused_when_the_dataset_is_made(sirens):
    space, labels = sirens
    with pytest.raises(IndexError, match=r"indices \[999\] out of range for 20 networks"):
        WeightDataset(space, labels, indices=[3, 999])
    with pytest.raises(IndexError, match=r"\[-1\]"):
        WeightDataset(space, labels, indices=torch.tensor([-1, 2]))
