"""DWSNets (Navon et al., 2023) / Neural Graphs (Kofinas et al., 2024) INR datasets.

MNIST-INR: one ``model_final.pth`` state dict per image under
``mnist_png_{training|testing}_{label}_{idx}/checkpoints/``, keys ``seq.{0,1,2}.{weight,bias}``
(torch layout), SIREN 2-32-32-1 with ``w0 = 30`` and 0.5 added to the output; ``mnist_splits.json``
is ``{split: {"path": [...], "label": [...]}}`` (paths as written on the authors' machine).
Fashion-MNIST-INR: ``{train,val,test}/model_{i}.pth`` holding the weights and the ``label``, listed
by ``splits.json`` = ``{split: [paths]}``.
Coordinates: ``x`` (columns) is input 0, ``y`` (rows) input 1, both ``linspace(-1, 1)``, as in
:func:`weightspace.data.fit_inrs`, so :func:`weightspace.data.render_inrs` draws these INRs as is.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..datasets import Zoo
from ..idx import DataFormatError
from .common import load_torch_file, siren_layers, stack_sirens

CONVENTIONS = {"kind": "inr", "w0": 30.0, "output_offset": 0.5, "coordinates": "xy", "value_range": [0.0, 1.0],
               "grid": [28, 28]}
_DIR = re.compile(r"^mnist_png_(training|testing)_(\d+)_(\d+)$")


def _resolve(root: Path, recorded: str, tail: int) -> Path:
    p = Path(recorded)
    if p.is_file():
        return p
    return root.joinpath(*p.parts[-tail:])


def read_dwsnets_mnist_inrs(root: str | Path, splits_file: str | Path | None = None) -> Zoo:
    """Read DWSNets' MNIST INRs under ``root``. With ``splits_file`` (default ``root/mnist_splits.json``
    when it exists) the splits (train / val / test) and labels come from it; without, every
    ``mnist_png_*`` folder is read, split and label taken from the folder name (train / test)."""
    root = Path(root)
    if splits_file is None and (root / "mnist_splits.json").is_file():
        splits_file = root / "mnist_splits.json"
    entries: list[tuple[str, Path, int, int]] = []          # split, path, label, image index
    if splits_file is not None:
        splits_file = Path(splits_file)
        try:
            table = json.loads(splits_file.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{splits_file}: not a readable JSON splits file: {e}") from e
        for split, rec in table.items():
            if not isinstance(rec, dict) or len(rec.get("path", [])) != len(rec.get("label", [])):
                raise DataFormatError(f"{splits_file}: split {split!r} needs equally long 'path' and 'label' lists")
            for p, lab in zip(rec["path"], rec["label"]):
                path = _resolve(root, p, 3)
                m = _DIR.match(path.parent.parent.name)
                entries.append((split, path, int(lab), int(m.group(3)) if m else -1))
    else:
        for d in sorted(root.glob("mnist_png_*")):
            m = _DIR.match(d.name)
            if m is None:
                continue
            split = "train" if m.group(1) == "training" else "test"
            entries.append((split, d / "checkpoints" / "model_final.pth", int(m.group(2)), int(m.group(3))))
        if not entries:
            raise DataFormatError(f"{root}: no mnist_png_{{training|testing}}_{{label}}_{{idx}} folders found")
    states = [siren_layers(_state(load_torch_file(p), p), p) for _, p, _, _ in entries]
    return _zoo(root, "dwsnets-mnist-inr", entries, states)


def read_dwsnets_fmnist_inrs(root: str | Path, splits_file: str | Path | None = None) -> Zoo:
    """Read DWSNets' Fashion-MNIST INRs: ``root/{train,val,test}/model_{i}.pth`` listed by
    ``root/splits.json`` (``{split: [paths]}``); without a splits file, every ``model_*.pth`` in the
    three folders is read. The label is stored in each file."""
    root = Path(root)
    splits_file = Path(splits_file) if splits_file is not None else root / "splits.json"
    entries = []
    if splits_file.is_file():
        try:
            table = json.loads(splits_file.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{splits_file}: not a readable JSON splits file: {e}") from e
        for split, paths in table.items():
            if not isinstance(paths, list):
                raise DataFormatError(f"{splits_file}: split {split!r} should be a list of paths")
            entries += [(split, _resolve(root, p, 2)) for p in paths]
    else:
        for split in ("train", "val", "test"):
            files = sorted((root / split).glob("model_*.pth"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
            entries += [(split, p) for p in files]
        if not entries:
            raise DataFormatError(f"{root}: no splits.json and no {{train,val,test}}/model_*.pth files")
    full, states = [], []
    for split, p in entries:
        obj = _state(load_torch_file(p), p)
        if "label" not in obj:
            raise DataFormatError(f"{p}: no 'label' stored in the file (keys {list(obj)[:8]})")
        m = re.search(r"(\d+)", p.stem)
        full.append((split, p, int(torch.as_tensor(obj["label"]).item()), int(m.group(1)) if m else -1))
        states.append(siren_layers(obj, p))
    return _zoo(root, "dwsnets-fmnist-inr", full, states)


def _state(obj, path: Path) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                inner = dict(obj[key])
                if "label" in obj:
                    inner["label"] = obj["label"]
                return inner
        return obj
    raise DataFormatError(f"{path}: holds a {type(obj).__name__}, expected a state dict")


def _zoo(root: Path, fmt: str, entries, states) -> Zoo:
    weights = stack_sirens(states, [e[1] for e in entries])
    splits: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        splits.setdefault(e[0], []).append(i)
    manifest = {"format": fmt, **CONVENTIONS, "num_items": len(entries),
                "paths": [str(e[1]) for e in entries]}
    records = {"label": torch.tensor([e[2] for e in entries]), "image_index": torch.tensor([e[3] for e in entries])}
    return Zoo(root, manifest, weights, records, {k: torch.tensor(v) for k, v in splits.items()})
