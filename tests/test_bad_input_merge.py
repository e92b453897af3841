"""Issue 19, `weightspace merge` and checkpoint I/O: bad input is refused before any work or write, with
one line naming the file or option (exit 2); NaN weights are reported, never written; mixed dtypes
merge; output files get the user's umask."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

import weightspace as ws
from weightspace.cli import main
from weightspace.io import check_finite, save_checkpoint
from weightspace.merge import barrier_curve, evaluate, interpolate, task_arithmetic, ties_merging
from weightspace.models import mlp

WIDTHS = [64, 16, 10]
MODEL = ["--model", "weightspace.models:mlp", "--model-kwargs", json.dumps({"widths": WIDTHS})]


def _nets(n: int = 3):
    torch.manual_seed(0)
    return [mlp(WIDTHS).state_dict() for _ in range(n)]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Checkpoints and data files, good and bad."""
    d = tmp_path_factory.mktemp("bad_merge")
    a, b, c = _nets()
    save_checkpoint(a, d / "a.safetensors")
    save_checkpoint(b, d / "b.safetensors")
    save_checkpoint(c, d / "c.safetensors")
    save_checkpoint(mlp([64, 16, 3]).state_dict(), d / "three.safetensors")
    nan = {k: v.clone() for k, v in b.items()}
    nan["2.weight"][3, 1] = float("nan")
    save_checkpoint(nan, d / "nan.safetensors")
    inf = {k: v.clone() for k, v in a.items()}
    inf["0.bias"][0] = float("inf")
    torch.save(inf, d / "inf.pt")
    save_checkpoint({k: (10 * v).long() for k, v in b.items()}, d / "int.safetensors")
    x = torch.randn(20, 64)
    save_checkpoint({"x": x, "y": torch.randint(0, 10, (7,))}, d / "count.safetensors")
    save_checkpoint({"x": x, "y": torch.randint(0, 10, (20,)) + 10}, d / "range.safetensors")
    save_checkpoint({"x": x, "y": torch.rand(20)}, d / "float.safetensors")
    save_checkpoint({"x": x[:0], "y": torch.zeros(0, dtype=torch.long)}, d / "empty.safetensors")
    (d / "folder").mkdir()
    return d


def _merge(d, *argv, out=None):
    out = out if out is not None else d / "new" / "m.safetensors"
    rc = main(["merge", *[str(d / a) if a.endswith((".safetensors", ".pt")) else a for a in argv], "--out", str(out)])
    return rc, out


# (defect, argv, words the one error line must hold)
BAD = [
    ("5-nan-naive", ["a.safetensors", "nan.safetensors", *MODEL, "--method", "naive", "--data", "digits"],
     ["nan.safetensors", "'2.weight'", "NaN"]),
    ("5-nan-weight-matching", ["a.safetensors", "nan.safetensors", *MODEL, "--input-shape", "2,64"],
     ["nan.safetensors", "'2.weight'"]),
    ("5-inf-average", ["inf.pt", "b.safetensors", *MODEL, "--method", "average", "--input-shape", "2,64"],
     ["inf.pt", "'0.bias'", "Inf"]),
    ("5-nan-base-ties", ["a.safetensors", *MODEL, "--method", "ties", "--base", "nan.safetensors",
                         "--input-shape", "2,64"], ["nan.safetensors", "'2.weight'"]),
    ("5-nan-task-arithmetic", ["nan.safetensors", *MODEL, "--method", "task-arithmetic", "--base", "a.safetensors",
                               "--input-shape", "2,64"], ["nan.safetensors"]),
    ("6-int-weights", ["a.safetensors", "int.safetensors", *MODEL, "--method", "naive", "--data", "digits"],
     ["int.safetensors", "tensor '0.", "int64"]),
    ("7-points-1", ["a.safetensors", "b.safetensors", *MODEL, "--data", "digits", "--points", "1"], ["--points"]),
    ("7-points-0", ["a.safetensors", "b.safetensors", *MODEL, "--data", "digits", "--points", "0"], ["--points"]),
    ("8-alpha-nan", ["a.safetensors", "b.safetensors", *MODEL, "--input-shape", "2,64", "--alpha", "nan"], ["--alpha"]),
    ("8-scale-inf", ["b.safetensors", *MODEL, "--method", "task-arithmetic", "--base", "a.safetensors",
                     "--input-shape", "2,64", "--scale", "inf"], ["--scale"]),
    ("8-weights-nan", ["a.safetensors", "b.safetensors", *MODEL, "--method", "average", "--input-shape", "2,64",
                       "--weights", "1,nan"], ["--weights"]),
    ("9-target-count", ["a.safetensors", "b.safetensors", *MODEL, "--method", "naive", "--data", "count.safetensors"],
     ["count.safetensors", "7 targets", "20 inputs"]),
    ("9-class-out-of-range", ["a.safetensors", "b.safetensors", *MODEL, "--method", "naive",
                              "--data", "range.safetensors"], ["range.safetensors", "10..19", "out of range", "0..9"]),
    ("9-float-targets", ["a.safetensors", "b.safetensors", *MODEL, "--method", "naive", "--data", "float.safetensors"],
     ["float.safetensors", "class ids"]),
    ("9-zero-rows", ["a.safetensors", "b.safetensors", *MODEL, "--method", "naive", "--data", "empty.safetensors"],
     ["empty.safetensors", "no samples"]),
    ("9-digits-vs-3-classes", ["three.safetensors", "three.safetensors", "--model", "weightspace.models:mlp",
                               "--model-kwargs", '{"widths": [64, 16, 3]}', "--method", "naive", "--data", "digits"],
     ["--data digits", "0..9", "out of range", "0..2"]),
    ("22-kwargs-list", ["a.safetensors", "b.safetensors", *MODEL[:3], "[1,2]", "--input-shape", "2,64"],
     ["--model-kwargs", "JSON object"]),
    ("22-kwargs-not-json", ["a.safetensors", "b.safetensors", *MODEL[:3], "{widths: 3}", "--input-shape", "2,64"],
     ["--model-kwargs", "JSON"]),
    ("22-kwargs-unknown", ["a.safetensors", "b.safetensors", *MODEL[:3], '{"widths": [64, 16, 10], "depth": 2}',
                           "--input-shape", "2,64"], ["--model-kwargs", "'depth'"]),
    ("22-kwargs-missing", ["a.safetensors", "b.safetensors", *MODEL[:3], "{}", "--input-shape", "2,64"],
     ["--model-kwargs", "'widths'"]),
    ("22-kwargs-bad-value", ["a.safetensors", "b.safetensors", *MODEL[:3],
                             '{"widths": [64, 16, 10], "activation": "x"}', "--input-shape", "2,64"],
     ["--model-kwargs", "KeyError"]),
    ("22-not-a-model", ["a.safetensors", "b.safetensors", "--model", "os:getcwd", "--input-shape", "2,64"],
     ["--model", "not a torch.nn.Module"]),
    ("22-unknown-module", ["a.safetensors", "b.safetensors", "--model", "no_such_module:f", "--input-shape", "2,64"],
     ["--model", "no_such_module"]),
    ("args-three-for-a-pair", ["a.safetensors", "b.safetensors", "c.safetensors", *MODEL, "--input-shape", "2,64"],
     ["merge-many"]),
    ("args-weights-count", ["a.safetensors", "b.safetensors", *MODEL, "--method", "average", "--input-shape", "2,64",
                            "--weights", "1,2,3"], ["--weights", "3 weights for 2"]),
    ("args-density", ["b.safetensors", *MODEL, "--method", "ties", "--base", "a.safetensors", "--input-shape", "2,64",
                      "--density", "1.5"], ["--density"]),
    ("args-no-base", ["b.safetensors", *MODEL, "--method", "dare", "--input-shape", "2,64"], ["--base"]),
    ("args-plot-without-targets", ["a.safetensors", "b.safetensors", *MODEL, "--input-shape", "2,64",
                                   "--plot", "new/p.png"], ["--plot"]),
    ("args-input-shape", ["a.safetensors", "b.safetensors", *MODEL, "--input-shape", "2,-64"], ["--input-shape"]),
    ("file-missing", ["a.safetensors", "missing.safetensors", *MODEL, "--input-shape", "2,64"],
     ["missing.safetensors"]),
    ("file-is-folder", ["a.safetensors", "folder", *MODEL, "--input-shape", "2,64"], ["folder"]),
]


@pytest.mark.parametrize("argv, words", [pytest.param(a, w, id=i) for i, a, w in BAD])
def test_bad_merge_invocation_exits_2_with_one_line_and_writes_nothing(d, tmp_path, capsys, argv, words):
    argv = [str(d / a) if a == "folder" else str(tmp_path / a) if a == "new/p.png" else a for a in argv]
    rc, out = _merge(d, *argv, out=tmp_path / "new" / "m.safetensors")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("weightspace merge: error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert not out.parent.exists()                   # not the checkpoint, not a temp file, not a folder


def test_5_nonfinite_weights_name_the_checkpoint_and_the_first_tensor():
    state = {"ok": torch.ones(3), "steps": torch.tensor(4), "w": torch.tensor([1.0, float("nan"), float("-inf")])}
    with pytest.raises(ws.CheckpointError, match=r"'w' holds 1 NaN and 1 Inf values of 3 .*\(net\.pt\)"):
        check_finite(state, "net.pt")
    check_finite({"w": torch.ones(2, dtype=torch.float16), "n": torch.tensor(1)}, "fine.pt")


def test_5_a_merge_that_overflows_is_not_written(d, capsys):
    half = d / "half"
    half.mkdir()
    a, b, _ = _nets()
    save_checkpoint({k: v.half() for k, v in a.items()}, half / "base.safetensors")
    save_checkpoint({k: v.half() for k, v in b.items()}, half / "ft.safetensors")
    rc, out = _merge(half, "ft.safetensors", "--base", "base.safetensors", *MODEL, "--method", "task-arithmetic",
                     "--scale", "1e6", "--input-shape", "2,64")
    err = capsys.readouterr().err
    assert rc == 2 and "Inf" in err and "float16" in err and "--method task-arithmetic" in err
    assert not out.parent.exists()


def test_6_mixed_dtypes_merge_in_a_common_dtype_and_keep_the_checkpoints_dtype(d, capsys):
    mixed = d / "mixed"
    mixed.mkdir()
    a, b, c = _nets()
    save_checkpoint({k: v.half() for k, v in a.items()}, mixed / "a16.safetensors")
    save_checkpoint({k: v.half() for k, v in b.items()}, mixed / "b16.safetensors")
    save_checkpoint({k: v.double() for k, v in b.items()}, mixed / "b64.safetensors")
    save_checkpoint({k: v.bfloat16() for k, v in c.items()}, mixed / "cbf.safetensors")
    out = mixed / "m16.safetensors"                  # two float16 checkpoints, with the barrier table
    rc, _ = _merge(mixed, "a16.safetensors", "b16.safetensors", *MODEL, "--method", "naive", "--data", "digits",
                   "--points", "3", out=out)
    assert rc == 0 and "naive" in capsys.readouterr().out
    merged = ws.load_checkpoint(out)
    assert all(v.dtype == torch.float16 for v in merged.values())
    assert torch.equal(merged["0.weight"], torch.lerp(a["0.weight"].half().float(), b["0.weight"].half().float(),
                                                      0.5).half())
    for argv, dtype in ((["a16.safetensors", "b64.safetensors", "--method", "weight-matching"], torch.float16),
                        (["b64.safetensors", "--base", "cbf.safetensors", "--method", "ties"], torch.bfloat16)):
        rc, _ = _merge(mixed, *argv, *MODEL, "--input-shape", "2,64", out=out)
        assert rc == 0, argv
        assert {v.dtype for v in ws.load_checkpoint(out).values()} == {dtype}
    # the library functions too: float32 or wider inside, the reference network's dtype out
    mid = interpolate({"w": torch.tensor([1.0], dtype=torch.float16)}, {"w": torch.tensor([2.0], dtype=torch.float64)},
                      0.5)
    assert mid["w"].dtype == torch.float16 and mid["w"].item() == 1.5
    ta = task_arithmetic({"w": torch.tensor([1.0], dtype=torch.bfloat16)},
                         [{"w": torch.tensor([3.0], dtype=torch.float16)}], scale=0.5)
    assert ta["w"].dtype == torch.bfloat16 and ta["w"].item() == 2.0


def test_7_barrier_curve_needs_both_ends():
    a, b, _ = _nets()
    model, data = mlp(WIDTHS), (torch.randn(4, 64), torch.tensor([0, 1, 2, 3]))
    for n in (0, 1):
        with pytest.raises(ValueError, match="n >= 2"):
            barrier_curve(model, a, b, data, n)
    curve = barrier_curve(model, a, b, data, 2)
    assert curve.loss[0] == pytest.approx(evaluate(model, a, data)[0])
    assert curve.loss[-1] == pytest.approx(evaluate(model, b, data)[0])


def test_8_merge_functions_refuse_nonfinite_arguments():
    a, b = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="alpha"):
        interpolate(a, b, float("nan"))
    with pytest.raises(ValueError, match="scale"):
        task_arithmetic(a, [b], scale=float("inf"))
    with pytest.raises(ValueError, match="weight"):
        ties_merging(a, [b], weights=[float("nan")])


def test_9_evaluate_on_no_samples_says_so():
    with pytest.raises(ValueError, match="no"):
        evaluate(torch.nn.Linear(2, 2), {}, (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_20_out_naming_a_folder(d, capsys):
    rc, _ = _merge(d, "a.safetensors", "b.safetensors", *MODEL, "--input-shape", "2,64", out=d / "folder")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--out" in err[0] and "folder" in err[0]
    assert list((d / "folder").iterdir()) == []
    with pytest.raises(IsADirectoryError):
        save_checkpoint({"w": torch.ones(1)}, d / "folder")
    assert list((d / "folder").iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_21_written_files_get_the_umask(tmp_path, umask):
    from weightspace.data.shards import write_json, write_shard

    old = os.umask(umask)
    try:
        paths = [save_checkpoint({"w": torch.ones(2)}, tmp_path / "c.safetensors"),
                 save_checkpoint({"w": torch.ones(2)}, tmp_path / "c.pt"),
                 write_shard(tmp_path / "s.safetensors", {"w": torch.ones(2, 3)}),
                 write_json(tmp_path / "m.json", {"a": 1})]
        lin = save_checkpoint({"weight": torch.ones(1, 2), "bias": torch.ones(1)}, tmp_path / "lin.safetensors")
        rc = main(["merge", str(lin), str(lin), "--model", "torch.nn:Linear", "--model-kwargs",      # the command
                   '{"in_features": 2, "out_features": 1}', "--method", "average", "--input-shape", "1,2",
                   "--out", str(tmp_path / "merged.safetensors")])
        assert rc == 0
        paths.append(tmp_path / "merged.safetensors")
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
