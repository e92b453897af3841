"""`weightspace merge --model hf:FOLDER` on Hugging Face model folders (skipped without transformers)."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from weightspace.cli import main
from weightspace.io import load_checkpoint

transformers = pytest.importorskip("transformers")


def _gpt2(seed: int):
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A GPT-2 fine-tune folder A, B = A with hidden neurons and heads permuted, and a base."""
    root = tmp_path_factory.mktemp("hf")
    a = _gpt2(0)
    spec = ws.WeightSpaceSpec.from_module(a, torch.randint(0, 100, (1, 8)))
    g = ws.random_element(spec, torch.Generator().manual_seed(1), kinds=("permutation",))
    state = {k: v.detach() for k, v in a.state_dict().items()}
    b = _gpt2(0)
    b.load_state_dict(ws.act(state, spec, g))
    base = _gpt2(2)
    for name, model in (("a", a), ("b", b), ("base", base)):
        model.save_pretrained(root / name)
    assert "lm_head.weight" not in load_checkpoint(root / "a" / "model.safetensors")   # stored once, tied
    return root, state, b


def test_weight_matching_recovers_the_permuted_fine_tune(folders, capsys):
    root, state, b = folders
    moved = max((b.state_dict()[k] - state[k]).abs().max().item() for k in state)
    assert moved > 1e-3                                          # the copy really is permuted
    out = root / "merged.safetensors"
    rc = main(["merge", str(root / "a"), str(root / "b"), "--model", f"hf:{root / 'a'}", "--method",
               "weight-matching", "--out", str(out)])
    assert rc == 0
    merged = load_checkpoint(out)
    assert set(merged) == set(state)                             # the tied head filled back in
    assert max((merged[k] - state[k]).abs().max().item() for k in state) < 1e-6
    assert "0.0000 after" in capsys.readouterr().out


def test_ties_on_fine_tunes_of_a_base(folders):
    root, state, _ = folders
    out = root / "ties.safetensors"
    rc = main(["merge", str(root / "a"), str(root / "b"), "--base", str(root / "base"), "--model",
               f"hf:{root / 'base' / 'config.json'}", "--method", "ties", "--out", str(out)])
    assert rc == 0
    model = _gpt2(5)
    model.load_state_dict(load_checkpoint(out))                  # a loadable GPT-2 state dict
    assert torch.isfinite(model(torch.randint(0, 100, (1, 8))).logits).all()


def test_a_folder_without_config_is_refused(folders, tmp_path, capsys):
    root, _, _ = folders
    rc = main(["merge", str(root / "a"), str(root / "b"), "--model", f"hf:{tmp_path}", "--method",
               "weight-matching", "--out", str(tmp_path / "m.safetensors")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "--model" in err
    assert not (tmp_path / "m.safetensors").exists()
