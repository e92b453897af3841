"""NFN (Zhou et al., 2023) SIREN datasets (MNIST, Fashion-MNIST, CIFAR-10).

Files: ``{prefix}_{label}s/net{idx}.pth`` (``prefix`` ``randinit_smaller``; augmented copies under
``randinit_smaller_aug{i}``), each a state dict whose tensors in order are ``W1, b1, W2, b2, ...``
(``net.0.linear.weight``, ...). The label is in the folder name, the image index in the file name,
and the splits go by index: train ``[0, 45000)``, val ``[45000, 50000)``, test the rest
(``split_points``). NFN's SIRENs (w0 = 30, 2-32-32-C) fit images scaled to [-1, 1] with no output
offset, on ``torch.meshgrid`` coordinates in ``"ij"`` order (input 0 is the row coordinate);
``canonical=True`` swaps the first layer's two input columns so that input 0 is ``x`` (columns), this
library's convention (an exact re-labelling: the network draws the same image).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..datasets import Zoo
from ..idx import DataFormatError
from .common import load_torch_file, siren_layers, stack_sirens

_FILE = re.compile(r"^net(\d+)\.pth$")


def read_nfn_sirens(root: str | Path, prefix: str = "randinit_smaller", split_points: tuple[int, int] = (45000, 50000),
                    canonical: bool = True) -> Zoo:
    """Read NFN SIRENs ``root/{prefix}_{label}s/net{idx}.pth``; networks are ordered by index."""
    root = Path(root)
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)s$")
    found: dict[int, tuple[Path, int]] = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        m = pattern.match(d.name)
        if m is None or not d.is_dir():
            continue
        for f in d.iterdir():
            fm = _FILE.match(f.name)
            if fm is None:
                continue
            idx = int(fm.group(1))
            if idx in found:
                raise DataFormatError(f"{f}: index {idx} also in {found[idx][0]}")
            found[idx] = (f, int(m.group(1)))
    if not found:
        raise DataFormatError(f"{root}: no {prefix}_{{label}}s/net{{idx}}.pth files found")
    order = sorted(found)
    missing = sorted(set(range(order[-1] + 1)) - set(order))
    if missing:
        raise DataFormatError(f"{root}: indices are not contiguous; net{missing[0]}.pth is missing "
                              f"({len(missing)} missing in all)")
    states = []
    for i in order:
        p = found[i][0]
        obj = load_torch_file(p)
        if not isinstance(obj, dict):
            raise DataFormatError(f"{p}: holds a {type(obj).__name__}, expected a state dict")
        sd = siren_layers(obj, p)
        if canonical:
            sd["layers.0.weight"] = sd["layers.0.weight"][:, [1, 0]].contiguous()
        states.append(sd)
    weights = stack_sirens(states, [found[i][0] for i in order])
    n, (v, t) = len(order), split_points
    splits = {"train": torch.arange(0, min(v, n)), "val": torch.arange(min(v, n), min(t, n)),
              "test": torch.arange(min(t, n), n)}
    manifest = {"format": "nfn-siren", "kind": "inr", "w0": 30.0, "output_offset": 0.0,
                "coordinates": "xy" if canonical else "ij", "value_range": [-1.0, 1.0], "prefix": prefix,
                "num_items": n, "split_points": list(split_points)}
    records = {"label": torch.tensor([found[i][1] for i in order]), "index": torch.tensor(order)}
    return Zoo(root, manifest, weights, records, {k: s for k, s in splits.items() if len(s)})
