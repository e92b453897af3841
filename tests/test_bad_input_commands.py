"""Bad invocations of ``fit-inrs``, ``make-zoo`` and ``spec``: each ends with exactly one line on stderr,
``weightspace <cmd>: error: ...`` naming the option or the file, exit code 2, and nothing written."""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest

from weightspace.cli import main
from test_data_images import corrupt_deflate, make_idx_dataset

INR = ["--limit", "4", "--steps", "2", "--shard-size", "2", "--workers", "1", "--no-progress"]
MODELS = ["--num-models", "2", "--steps", "5", "--shard-size", "2", "--no-progress"]

CASES = [
    # fit-inrs: arguments (defects 18, 23 and 17 through the command line)
    ("fit-inrs --source mnist --out {out}", "(--root)"),
    ("fit-inrs --source imagenet --out {out}", "(--source)"),
    ("fit-inrs --out {out} --limit 0", "(--limit)"),
    ("fit-inrs --out {out} --limit -5", "(--limit)"),
    ("fit-inrs --out {out} --shard-size 0", "(--shard-size)"),
    ("fit-inrs --out {out} --hidden 0", "(--hidden)"),
    ("fit-inrs --out {out} --hidden 3,x", "--hidden"),
    ("fit-inrs --out {out} --w0 0", "(--w0)"),
    ("fit-inrs --out {out} --lr nan", "(--lr)"),
    ("fit-inrs --out {out} --target-psnr inf", "(--target-psnr)"),
    ("fit-inrs --out {out} --steps 0", "(--steps)"),
    ("fit-inrs --out {out} --batch-size 0", "(--batch-size)"),
    ("fit-inrs --out {out} --workers 0", "(--workers)"),
    ("fit-inrs --out {out} --seed -1", "(--seed)"),
    ("fit-inrs --out {out} --max-shards 0", "(--max-shards)"),
    # fit-inrs: files (defects 10, 11, 23)
    ("fit-inrs --source mnist --root {bad_gz} --out {out}", "train-images-idx3-ubyte.gz"),
    ("fit-inrs --source mnist --root {sizes} --out {out}", "t10k-images-idx3-ubyte.gz"),
    ("fit-inrs --out {a_file}", "(--out)"),
    ("fit-inrs --out {inr_zoo} --lr 0.001 " + " ".join(INR), "manifest.json"),
    ("fit-inrs --out {damaged_inr_zoo} " + " ".join(INR), "inr-00000.safetensors"),
    # make-zoo (defects 19, 23, and 10 / 11 through it)
    ("make-zoo --out {out} --num-models 0", "(--num-models)"),
    ("make-zoo --out {out} --num-models -2", "(--num-models)"),
    ("make-zoo --out {out} --source mnist", "(--root)"),
    ("make-zoo --out {out} --source cifar10 --root {sizes}", "(--source)"),
    ("make-zoo --out {out} --shard-size 0", "(--shard-size)"),
    ("make-zoo --out {out} --width 0", "(--width)"),
    ("make-zoo --out {out} --steps 0,10", "(--steps)"),
    ("make-zoo --out {out} --batch-size 0", "(--batch-size)"),
    ("make-zoo --out {out} --seed -1", "(--seed)"),
    ("make-zoo --source mnist --root {bad_gz} --out {out}", "train-images-idx3-ubyte.gz"),
    ("make-zoo --source mnist --root {sizes} --out {out}", "t10k-images-idx3-ubyte.gz"),
    ("make-zoo --out {a_file}", "(--out)"),
    ("make-zoo --out {model_zoo} --seed 1 " + " ".join(MODELS), "manifest.json"),
    # spec (defect 23)
    ("spec weightspace.models:SmallCNN --input-shape 1,x", "(--input-shape)"),
    ("spec weightspace.models:SmallCNN --input-shape 0,1,8,8", "(--input-shape)"),
    ("spec weightspace.models:SmallCNN --input-shape 2,3,28,28", "(--input-shape)"),
    ("spec weightspace.models:SmallCNN --input-shape 2,1,28,28 --tokens -1", "(--tokens)"),
    ("spec weightspace.models:mlp --input-shape 2,4", "(model)"),
    ("spec no_such_module_here:f --input-shape 2,4", "(model)"),
    ("spec bad_input_models:cummax_net --input-shape 3,4", "cummax"),
]


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as e:                                   # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err.splitlines()


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (files by their sha256), Python's bytecode cache aside."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*")) if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def places(tmp_path_factory, request):
    """Input folders for the table: damaged MNIST copies and small zoos (built once)."""
    base = tmp_path_factory.mktemp("inputs")
    bad_gz, sizes = base / "bad-gz", base / "sizes"
    bad_gz.mkdir()
    sizes.mkdir()
    make_idx_dataset(bad_gz)
    p = bad_gz / "train-images-idx3-ubyte.gz"
    p.write_bytes(corrupt_deflate(gzip.decompress(p.read_bytes())))
    make_idx_dataset(sizes, test_size=14)
    inr_zoo, model_zoo = base / "inr-zoo", base / "model-zoo"
    assert main(["fit-inrs", "--out", str(inr_zoo), *INR]) == 0
    assert main(["make-zoo", "--out", str(model_zoo), *MODELS]) == 0
    damaged = base / "damaged-inr-zoo"
    shutil.copytree(inr_zoo, damaged)
    shard = damaged / "shards" / "inr-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    (base / "bad_input_models.py").write_text(
        "import torch\n\n\nclass CumMax(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)\n\n"
        "    def forward(self, x):\n        return self.b(torch.cummax(self.a(x), dim=-1).values)\n\n\n"
        "def cummax_net():\n    return CumMax()\n")
    (base / "a-file").write_text("not a folder")
    return {"base": base, "a_file": base / "a-file", "bad_gz": bad_gz, "sizes": sizes, "inr_zoo": inr_zoo,
            "model_zoo": model_zoo, "damaged_inr_zoo": damaged}


@pytest.mark.parametrize("command,names", CASES, ids=[c for c, _ in CASES])
def test_bad_invocation_prints_one_line_exits_2_and_writes_nothing(command, names, places, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.syspath_prepend(str(places["base"]))
    monkeypatch.chdir(tmp_path)
    argv = command.format(out=tmp_path / "out", **{k: v for k, v in places.items() if k != "base"}).split()
    cmd = argv[0]
    before = _snapshot(places["base"]), _snapshot(tmp_path)
    code, err = _cli(argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"weightspace {cmd}: error: "), err
    assert names in err[0]
    assert (_snapshot(places["base"]), _snapshot(tmp_path)) == before


@pytest.mark.parametrize("cmd,target", [("fit-inrs", "weightspace.data.recipes.make_inr_zoo"),
                                        ("make-zoo", "weightspace.data.model_zoo.make_model_zoo")])
def test_ctrl_c_says_how_to_resume_in_one_line(cmd, target, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    code, err = _cli([cmd, "--out", str(tmp_path / "z"), "--no-progress"], capsys)
    assert (code, err) == (2, [f"weightspace {cmd}: interrupted; rerun the same command to resume"])
