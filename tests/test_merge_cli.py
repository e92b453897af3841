"""The `weightspace merge` command end to end."""
from __future__ import annotations

import json

import pytest
import torch

import weightspace as ws
from align_helpers import digit_mlps
from weightspace.cli import main

MODEL = ["--model", "weightspace.models:mlp", "--model-kwargs", json.dumps({"widths": [64, 64, 64, 10]})]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    (ma, mb), _, _ = digit_mlps()
    ws.save_checkpoint(ma.state_dict(), d / "a.safetensors")
    torch.save(mb.state_dict(), d / "b.pt")                       # weights-only torch files load too
    return d


def test_help_documents_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    text = capsys.readouterr().out
    for method in ["naive", "weight-matching", "activation-matching", "ste", "sinkhorn", "merge-many", "average",
                   "task-arithmetic", "ties", "dare"]:
        assert f"\n  {method} " in text, method


def test_weight_matching_merge_writes_checkpoint_table_and_plot(checkpoints, capsys):
    out, png = checkpoints / "m.safetensors", checkpoints / "b.png"
    rc = main(["merge", str(checkpoints / "a.safetensors"), str(checkpoints / "b.pt"), *MODEL, "--method",
               "weight-matching", "--out", str(out), "--plot", str(png), "--data", "digits", "--points", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "naive" in text and "weight-matching" in text and "barrier" in text
    merged = ws.load_checkpoint(out)
    (ma, mb), _, _ = digit_mlps()
    spec = ws.WeightSpaceSpec.from_module(ma, torch.randn(2, 64))
    a, b = ma.state_dict(), mb.state_dict()
    expected = ws.interpolate(a, ws.permute(b, spec, ws.weight_matching(spec, a, b)), 0.5)
    assert all(torch.allclose(merged[k], expected[k], atol=1e-6) for k in expected)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_task_methods_and_merge_many(checkpoints, capsys):
    a, b = str(checkpoints / "a.safetensors"), str(checkpoints / "b.pt")
    for extra in (["--method", "ties", "--base", a], ["--method", "dare", "--base", a, "--drop-rate", "0.5"],
                  ["--method", "task-arithmetic", "--base", a, "--scale", "0.5"], ["--method", "merge-many"],
                  ["--method", "average", "--weights", "1,3"]):
        rc = main(["merge", a, b, *MODEL, "--out", str(checkpoints / "x.safetensors"), "--data", "digits", *extra])
        assert rc == 0, extra
    # task arithmetic with scale 1/2 from base a and fine-tune b is the midpoint
    main(["merge", b, *MODEL, "--method", "task-arithmetic", "--base", a, "--scale", "0.5", "--input-shape", "2,64",
          "--out", str(checkpoints / "t.safetensors")])
    t = ws.load_checkpoint(checkpoints / "t.safetensors")
    mid = ws.interpolate(ws.load_checkpoint(a), ws.load_checkpoint(b), 0.5)
    assert all(torch.allclose(t[k], mid[k], atol=1e-6) for k in mid)


def test_bad_inputs_give_clear_errors(checkpoints, capsys):
    a = checkpoints / "a.safetensors"
    bad = checkpoints / "bad.safetensors"
    bad.write_bytes(a.read_bytes()[:50])
    rc = main(["merge", str(a), str(bad), *MODEL, "--out", str(checkpoints / "y.safetensors"), "--input-shape", "2,64"])
    assert rc == 2 and "bad.safetensors" in capsys.readouterr().err
    other = ["--model", "weightspace.models:mlp", "--model-kwargs", json.dumps({"widths": [64, 32, 64, 10]})]
    rc = main(["merge", str(a), str(a), *other, "--out", str(checkpoints / "y.safetensors"), "--input-shape", "2,64"])
    err = capsys.readouterr().err
    assert rc == 2 and "0.weight" in err and "a.safetensors" in err
    rc = main(["merge", str(a), str(a), *MODEL, "--method", "activation-matching", "--input-shape", "2,64",
               "--out", str(checkpoints / "y.safetensors")])
    assert rc == 2 and "--data" in capsys.readouterr().err
