"""Issue 19, Python API: careless or hostile input gets an error naming what is wrong and where
(defects 13-16 and 24); each test failed before its fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import weightspace as ws
from helpers import changed, outputs, rel_err


# ------------------------------------------------------------------ 13: a size-1 slice of a hidden layer
class SliceSkip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) + h[:, 3:4]


@pytest.mark.parametrize("check", [True, False])
def test_size1_slice_gives_a_spec_that_keeps_the_function(check):
    """Was: "internal error ... please report" (check=True), or a spec whose permutations moved
    neuron 3 and changed the outputs by 1.28 (check=False)."""
    torch.manual_seed(0)
    model, x = SliceSkip().double(), torch.randn(5, 4, dtype=torch.float64)
    spec = ws.WeightSpaceSpec.from_module(model, x, check=check)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    moved = ws.act(sd, spec, ws.random_element(spec, torch.Generator().manual_seed(1)))
    assert changed(sd, moved)
    assert rel_err(outputs(model, (x,)), outputs(model, (x,), moved)) < 1e-10
    assert sorted(g.size for g in spec.groups if g.size > 1) == [3, 4]  # neurons 0-2 and 4-7; 3 pinned


# ------------------------------------------------------------------ 14: tracer errors name node, op, module
def _inside(body):
    """A model whose submodule 'block' runs ``body(block, h)`` on a hidden layer h."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return body(self, torch.relu(self.a(x)))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x)

    return Outer()


def _assign(m, h):
    h[:, 0] = 0
    return m.b(h)


UNTRACEABLE = {
    "item assignment": (_assign, "relu", "item assignment", "torch.where"),
    "numpy round trip": (lambda m, h: m.b(torch.from_numpy(h.numpy())), "relu", "Tensor.numpy", "stay in torch"),
    "np.asarray": (lambda m, h: m.b(torch.as_tensor(np.asarray(h))), "relu", "numpy array", "stay in torch"),
    "torch.randn": (lambda m, h: m.b(h + torch.randn(h.shape)), "randn", "torch.randn", "noise in as an input"),
    "Tensor.normal_": (lambda m, h: m.b(h + torch.empty(8).normal_()), "normal_", "Tensor.normal_", "check=False"),
    "F.dropout": (lambda m, h: m.b(F.dropout(h, 0.5)), "dropout", "dropout", "training=self.training"),
}


@pytest.mark.parametrize("case", sorted(UNTRACEABLE))
def test_untraceable_forward_is_refused_naming_node_op_and_module(case):
    """Were: "'ConcreteProxy' object does not support item assignment", "invalid __array_struct__",
    "internal error ... please report"."""
    body, node, op, todo = UNTRACEABLE[case]
    with pytest.raises(ws.UnsupportedOpError) as e:
        ws.WeightSpaceSpec.from_module(_inside(body), torch.randn(5, 4))
    msg = str(e.value)
    assert e.value.node == node and e.value.module == "block", msg
    assert op in e.value.op and f"node '{node}'" in msg and "module 'block'" in msg and todo in msg, msg
    assert "internal error" not in msg


def test_random_draws_trace_with_check_false_as_constants():
    """``check=False`` takes a draw as a fixed constant: the noise meets h, which is pinned."""
    randn = torch.randn
    spec = ws.WeightSpaceSpec.from_module(_inside(lambda m, h: m.b(h + torch.randn(h.shape))), torch.randn(5, 4),
                                          check=False)
    assert not any(g.size > 1 for g in spec.groups)
    assert torch.randn is randn and "normal_" not in vars(torch.Tensor)  # the tracer's patches are undone


# ------------------------------------------------------------------ 15: network indices of a WeightSpace
@pytest.fixture
def mlp():
    spec = ws.WeightSpaceSpec.mlp([3, 5, 2])
    sd = {p.name: torch.randn(p.shape) for p in spec.params}
    return spec, sd


@pytest.mark.parametrize("index", [5, 2, -3, np.int64(2), torch.tensor(7), torch.tensor([0, 2])])
def test_weightspace_index_out_of_range_raises_index_error(mlp, index):
    """Was: an empty batch for ``ws[5]`` and ``ws[-3]``."""
    spec, sd = mlp
    batch = ws.WeightSpace.from_state_dicts([sd, sd], spec)
    with pytest.raises(IndexError, match="out of range for a weight space of 2 networks"):
        batch[index]


def test_weightspace_indices_in_range(mlp):
    spec, sd = mlp
    other = {k: v + 1 for k, v in sd.items()}
    batch = ws.WeightSpace.from_state_dicts([sd, other], spec)
    assert torch.equal(batch[-1]["0.weight"][0], other["0.weight"])
    assert torch.equal(batch[torch.tensor(0)]["0.weight"][0], sd["0.weight"])
    assert len(batch[1:9]) == 1 and len(batch[5:]) == 0  # slices clip, like a list's
    assert len(batch[torch.tensor([True, False])]) == 1 and len(batch[[1, 0, 1]]) == 3 and len(batch[[]]) == 0


# ------------------------------------------------------------------ 16: permutations are validated everywhere
NOT_A_PERMUTATION = torch.tensor([0, 0, 1, 2, 3])


@pytest.mark.parametrize("entry", ["invert", "compose_first", "compose_second", "GroupElement", "act", "permute",
                                   "node_permutation"])
def test_non_permutations_are_refused_naming_the_group(mlp, entry):
    """Was: ``invert_permutation({"0": [0, 0, 1, ...]})`` returned a tensor."""
    spec, sd = mlp
    bad, ok = {"0": NOT_A_PERMUTATION}, {"0": torch.arange(5)}
    calls = {
        "invert": lambda: ws.invert_permutation(bad),
        "compose_first": lambda: ws.compose_permutations(bad, ok),
        "compose_second": lambda: ws.compose_permutations(ok, bad),
        "GroupElement": lambda: ws.GroupElement(spec, {"permutation": bad}),
        "act": lambda: ws.act(sd, spec, bad),
        "permute": lambda: ws.permute(sd, spec, bad),
        "node_permutation": lambda: ws.node_permutation(spec, bad),
    }
    msg = r"group '0' is not a permutation of 0..4: 0 appears 2 times and 4 is missing"
    with pytest.raises(ws.SpecError, match=msg):
        calls[entry]()


@pytest.mark.parametrize("bad,match", [([[1, 0, 2], [2, 2, 0]], r"\(row 1\): 2 appears 2 times"),
                                       ([0, 5, 1], "5 is out of range"), ([0.0, 1.0], "integer tensor"),
                                       ([True, False], "integer tensor"), ("012", "integer tensor")])
def test_invert_permutation_checks_every_value(bad, match):
    with pytest.raises(ws.SpecError, match=match):
        ws.invert_permutation({"g": bad})


def test_compose_checks_sizes_and_composes_per_network_elements():
    with pytest.raises(ws.SpecError, match="group 'g' of sizes 3 and 4"):
        ws.compose_permutations({"g": torch.arange(3)}, {"g": torch.arange(4)})
    a, b = torch.tensor([[1, 0, 2], [2, 1, 0]]), torch.tensor([1, 2, 0])  # was a[b]: rows, not entries
    assert torch.equal(ws.compose_permutations({"g": a}, {"g": b})["g"], torch.stack([a[0][b], a[1][b]]))
    spec = ws.WeightSpaceSpec.mlp([3, 5, 2])
    with pytest.raises(ws.SpecError, match="group elements for 2 and 3 networks"):
        ws.random_element(spec, batch_size=2).compose(ws.random_element(spec, batch_size=3))


# ------------------------------------------------------------------ 24: small API errors
def test_permute_and_scale_with_none_raise_spec_error(mlp):
    """Was: AttributeError 'NoneType' object has no attribute 'items'."""
    spec, sd = mlp
    with pytest.raises(ws.SpecError, match="permutations must be a dict.*got NoneType"):
        ws.permute(sd, spec, None)
    with pytest.raises(ws.SpecError, match="must be a dict.*got NoneType"):
        ws.scale(sd, spec, None)


def test_weightspaces_of_different_batch_sizes_do_not_add(mlp):
    """Was: a raw RuntimeError from torch ("The size of tensor a (2) must match ...")."""
    spec, sd = mlp
    two, three = (ws.WeightSpace.from_state_dicts([sd] * n, spec) for n in (2, 3))
    for op in (lambda: two + three, lambda: three - two, lambda: two * three):
        with pytest.raises(ws.SpecError, match="weight spaces of (2 and 3|3 and 2) networks"):
            op()
    one = ws.WeightSpace.from_state_dicts([sd], spec)
    assert len(three - one) == 3 and len(one + three) == 3  # a single network broadcasts


def test_to_graph_of_an_empty_list_says_so():
    """Was: "to_graph expects a state dict, a WeightSpace or a list, got list"."""
    with pytest.raises(ws.SpecError, match="to_graph got an empty list"):
        ws.to_graph([], ws.WeightSpaceSpec.mlp([3, 5, 2]))


@pytest.mark.parametrize("module,got", [(None, "NoneType"), (lambda x: x, "the function"),
                                        (nn.Linear, r"the class Linear itself \(instantiate it"),
                                        ({"w": torch.zeros(1)}, r"a dict \(a state dict\?")])
def test_from_module_needs_a_module(module, got):
    """Was: AttributeError 'NoneType' object has no attribute 'training' (and the like)."""
    with pytest.raises(ws.SpecError, match=f"from_module expects an nn.Module instance, got {got}"):
        ws.WeightSpaceSpec.from_module(module, torch.randn(2, 3))
