"""Hugging Face ``transformers`` models traced as users call them: ``from_module(model, input_ids)``
with no wrapper (keyword inputs, ``**kwargs`` forwards, ``ModelOutput`` records as outputs).

Small configs with random weights (no download). Each model traces (the tracer's own self-check
runs), keeps its head structure, preserves its function under a random group element in float64,
moves weights, and round-trips its parameter graph. Skipped when ``transformers`` is not installed.
"""
from __future__ import annotations

import pytest
import torch

import weightspace as ws

T = pytest.importorskip("transformers")

VOCAB = 50


def _ids(seed: int = 0, n: int = 2, t: int = 6) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def _gpt2():
    return T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=16, n_head=4, vocab_size=VOCAB, n_positions=8)), _ids()


def _bert_cls():
    cfg = T.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=4, intermediate_size=32,
                       vocab_size=VOCAB, max_position_embeddings=8, num_labels=3)
    return T.BertForSequenceClassification(cfg), _ids()


def _llama():
    cfg = T.LlamaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=32, vocab_size=VOCAB, max_position_embeddings=8)
    return T.LlamaForCausalLM(cfg), _ids()


def _t5():
    cfg = T.T5Config(num_layers=1, d_model=16, num_heads=4, d_kv=4, d_ff=32, vocab_size=VOCAB)
    return T.T5ForConditionalGeneration(cfg), {"input_ids": _ids(), "decoder_input_ids": _ids(1)}


def _vit():
    cfg = T.ViTConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=4, intermediate_size=32,
                      image_size=8, patch_size=4, num_labels=3)
    return T.ViTForImageClassification(cfg), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


# name -> (builder, relative tolerance in float64; Llama's RMSNorm computes in float32)
MODELS = {"gpt2": (_gpt2, 1e-10), "bert_cls": (_bert_cls, 1e-10), "llama_gqa": (_llama, 1e-5),
          "t5": (_t5, 1e-10), "vit": (_vit, 1e-10)}


def _call(model, x, state=None):
    original = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        if state is not None:
            model.load_state_dict(state)
        with torch.no_grad():
            out = model(**x) if isinstance(x, dict) else model(x)
    finally:
        model.load_state_dict(original)
    return out.logits


def _double(x):
    if isinstance(x, dict):
        return x
    return x.double() if x.is_floating_point() else x


@pytest.fixture(scope="module")
def traced():
    torch.manual_seed(0)
    cache = {}

    def get(name):
        if name not in cache:
            build, tol = MODELS[name]
            model, x = build()
            model = model.double().eval()
            x = _double(x)
            cache[name] = (model, x, ws.WeightSpaceSpec.from_module(model, x), tol)
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(MODELS))
def test_traces_unwrapped_and_preserves_function(name, traced):
    model, x, spec, tol = traced(name)
    assert any(g.heads is not None for g in spec.groups), "attention heads stay permutable"
    assert any("outputs: the tensor fields logits" in n for n in spec.notes), spec.notes
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    moved = ws.act(sd, spec, ws.random_element(spec, g))
    assert [k for k in sd if not torch.equal(sd[k], moved[k])], "a group element must move weights"
    y, y_moved = _call(model, x), _call(model, x, moved)
    assert y.abs().max() > 0
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < tol


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_round_trip(name, traced):
    model, x, spec, _ = traced(name)
    sd = model.state_dict()
    back = ws.from_graph(ws.to_graph(sd, spec), spec).state_dict(0)
    for k in spec.weight_names:
        assert torch.equal(back[k].to(sd[k].dtype), sd[k]), k


def test_task_heads_permute_the_residual_stream(traced):
    """An LM head or a classifier reads the residual stream: it permutes (one group on the token
    embedding's feature axis, reaching every block)."""
    for name, emb in (("gpt2", "transformer.wte.weight"), ("bert_cls", "bert.embeddings.word_embeddings.weight")):
        _, _, spec, _ = traced(name)
        layout = spec[emb].axes[1]
        assert layout is not None and layout[0].group is not None, name
        users = [p for p in spec.params if any(a and any(s.group == layout[0].group for s in a) for a in p.axes)]
        assert len(users) > 6, name


def test_base_model_keeps_residual_stream_fixed_and_says_why():
    model = T.BertModel(T.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=4,
                                     intermediate_size=32, vocab_size=VOCAB, max_position_embeddings=8)).eval()
    spec = ws.WeightSpaceSpec.from_module(model, _ids())
    assert spec["embeddings.word_embeddings.weight"].axes[1] is None
    assert any("residual stream" in n and "task head" in n for n in spec.notes), spec.notes
    assert "residual stream" in str(spec)
    assert any(g.heads is not None for g in spec.groups)


def test_rotary_and_grouped_query_attention(traced):
    """Rotary embeddings pin the within-head order of q and k (and grouped-query attention that of
    v); heads stay: the key / value heads are a group and the query heads nest in them."""
    _, _, spec, _ = traced("llama_gqa")
    attn = "model.layers.0.self_attn"
    k_layout = spec[f"{attn}.k_proj.weight"].axes[0]
    q_layout = spec[f"{attn}.q_proj.weight"].axes[0]
    assert len(k_layout) == 1 and k_layout[0].inner == 4  # 2 kv heads moved whole, 4 dims each
    kv = spec.group(k_layout[0].group)
    assert kv.size == 2
    q = spec.group(q_layout[0].group)
    assert q.size == 4 and q.heads == (kv.name, 2)  # 4 query heads, 2 per kv head
    assert spec[f"{attn}.v_proj.weight"].axes[0][0].group == kv.name
    assert spec.group(spec["model.layers.0.mlp.gate_proj.weight"].axes[0][0].group).activation == "silu"
    assert any("rotary" in n and "q_proj" in n for n in spec.notes)


def test_t5_relative_position_bias_permutes_with_the_heads(traced):
    _, _, spec, _ = traced("t5")
    bias = spec["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].axes[1]
    q = spec["encoder.block.0.layer.0.SelfAttention.q.weight"].axes[0]
    assert bias is not None and q is not None
    assert spec.group(q[0].group).heads[0] == bias[0].group


def _neox():
    cfg = T.GPTNeoXConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=4, intermediate_size=32,
                          vocab_size=VOCAB, max_position_embeddings=8, rotary_pct=0.5)
    return T.GPTNeoXForCausalLM(cfg), _ids()


def _llama_eager_masked():
    cfg = T.LlamaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=4, num_key_value_heads=1,
                        intermediate_size=32, vocab_size=VOCAB, max_position_embeddings=8,
                        attn_implementation="eager")
    ids = _ids()
    return T.LlamaForCausalLM(cfg), {"input_ids": ids, "attention_mask": (ids > 10).long()}


@pytest.mark.parametrize("build,proj", [(_neox, "gpt_neox.layers.0.attention.query_key_value"),
                                        (_llama_eager_masked, "model.layers.0.self_attn.q_proj")],
                         ids=["gpt_neox_partial_rotary", "mqa_eager_masked"])
def test_rotary_variants(build, proj):
    """GPT-NeoX rotates only part of each head of a fused per-head q/k/v projection; eager Llama with
    one key / value head (multi-query) repeats it with expand + reshape (repeat_kv) under a padding
    mask. Both keep their query heads."""
    model, x = build()
    model = model.double().eval()
    spec = ws.WeightSpaceSpec.from_module(model, x)
    (seg,) = spec[f"{proj}.weight"].axes[0]  # 4 heads moved whole (within-head order pinned)
    assert seg.group is not None and seg.size == 4 and spec.group(seg.group).size == 4
    moved = ws.act(model.state_dict(), spec, ws.random_element(spec, torch.Generator().manual_seed(4)))
    y, y_moved = _call(model, x), _call(model, x, moved)
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < 1e-5


def test_t5_with_eager_attention():
    """Eager T5 adds the position bias to the logits by hand (was refused as "a product of two hidden
    activations that is not attention"); with sdpa it goes in as attn_mask (was a wrong spec)."""
    cfg = T.T5Config(num_layers=1, d_model=16, num_heads=4, d_kv=4, d_ff=32, vocab_size=VOCAB,
                     attn_implementation="eager")
    model = T.T5ForConditionalGeneration(cfg).double().eval()
    x = {"input_ids": _ids(), "decoder_input_ids": _ids(1)}
    spec = ws.WeightSpaceSpec.from_module(model, x)
    assert any(g.heads is not None for g in spec.groups)
    moved = ws.act(model.state_dict(), spec, ws.random_element(spec, torch.Generator().manual_seed(2)))
    y, y_moved = _call(model, x), _call(model, x, moved)
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < 1e-10


def test_padding_mask_keeps_the_heads():
    """Issue 21: a padding ``attention_mask`` (broadcast over heads) used to remove every head group."""
    model, ids = _bert_cls()
    model = model.double().eval()
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    x = {"input_ids": ids, "attention_mask": mask}
    plain = ws.WeightSpaceSpec.from_module(model, ids)
    masked = ws.WeightSpaceSpec.from_module(model, x)
    assert [g.heads for g in masked.groups] == [g.heads for g in plain.groups]
    sd = model.state_dict()
    moved = ws.act(sd, masked, ws.random_element(masked, torch.Generator().manual_seed(1)))
    y, y_moved = _call(model, x), _call(model, x, moved)
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < 1e-10


def test_gelu_new_is_labelled_gelu_without_sign_flips(traced):
    _, _, spec, _ = traced("gpt2")
    group = spec["transformer.h.0.mlp.c_fc.weight"].axes[1][0].group
    assert spec.group(group).activation == "gelu"
    assert not any(s.group == group and s.sign for s in spec.scalings)
