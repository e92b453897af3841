"""Readers of published formats, tested on small files written here in the same layouts."""
from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
import torch

from weightspace.data import (DataFormatError, read_dwsnets_fmnist_inrs, read_dwsnets_mnist_inrs, read_nfn_sirens,
                              read_small_cnn_zoo, render_inrs)
from weightspace.models import SmallCNN


def random_siren_state(gen, keys, out=1):
    shapes = [(32, 2), (32,), (32, 32), (32,), (out, 32), (out,)]
    return {k: torch.randn(s, generator=gen) * (0.5 if len(s) == 2 and s[1] == 2 else 0.05)
            for k, s in zip(keys, shapes)}


DWS_KEYS = ["seq.0.weight", "seq.0.bias", "seq.1.weight", "seq.1.bias", "seq.2.weight", "seq.2.bias"]
NFN_KEYS = ["net.0.linear.weight", "net.0.linear.bias", "net.1.linear.weight", "net.1.linear.bias",
            "net.2.weight", "net.2.bias"]


def siren_image(sd, keys, coords, offset):
    """The authors' forward: sin(30 (W x + b)) twice, then a linear layer (+ offset)."""
    h = coords
    for i in range(2):
        h = torch.sin(30 * (h @ sd[keys[2 * i]].T + sd[keys[2 * i + 1]]))
    return h @ sd[keys[4]].T + sd[keys[5]] + offset


def test_dwsnets_mnist_inrs(tmp_path):
    g = torch.Generator().manual_seed(0)
    entries = [("training", 3, 10), ("training", 7, 11), ("testing", 1, 12)]
    table = {"train": {"path": [], "label": []}, "val": {"path": [], "label": []}, "test": {"path": [], "label": []}}
    states = []
    for i, (part, label, idx) in enumerate(entries):
        d = tmp_path / f"mnist_png_{part}_{label}_{idx}" / "checkpoints"
        d.mkdir(parents=True)
        sd = random_siren_state(g, DWS_KEYS)
        torch.save(sd, d / "model_final.pth")
        states.append(sd)
        split = "test" if part == "testing" else ("val" if i == 1 else "train")
        # paths as the authors' script wrote them: absolute, on another machine
        table[split]["path"].append(f"/home/someone/dws/dataset/mnist-inrs/{d.parent.name}/checkpoints/model_final.pth")
        table[split]["label"].append(str(label))
    (tmp_path / "mnist_splits.json").write_text(json.dumps(table))
    zoo = read_dwsnets_mnist_inrs(tmp_path)
    assert zoo.records["label"].tolist() == [3, 7, 1]
    assert {k: v.tolist() for k, v in zoo.splits.items()} == {"train": [0], "val": [1], "test": [2]}
    assert torch.equal(zoo.weights["layers.1.weight"][1], states[1]["seq.1.weight"])
    # the DWSNets convention (np.meshgrid 'xy': x along columns is input 0) is the library's: images agree
    lin = np.linspace(-1, 1, 28)
    xx, yy = np.meshgrid(lin, lin)
    coords = torch.from_numpy(np.stack([xx.flatten(), yy.flatten()]).T).float()
    ref = siren_image(states[2], DWS_KEYS, coords, 0.5).reshape(28, 28)
    assert torch.allclose(render_inrs(zoo.weights[2], (28, 28), 30.0, 0.5)[0, 0], ref, atol=1e-5)
    # without the splits file: split and label from the folder names
    (tmp_path / "mnist_splits.json").unlink()
    zoo = read_dwsnets_mnist_inrs(tmp_path)
    assert zoo.splits["test"].tolist() == [0] and zoo.records["label"].tolist() == [1, 3, 7]
    # a truncated checkpoint is named
    p = tmp_path / "mnist_png_training_7_11" / "checkpoints" / "model_final.pth"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataFormatError, match=r"mnist_png_training_7_11/checkpoints/model_final\.pth"):
        read_dwsnets_mnist_inrs(tmp_path)


def test_dwsnets_fashion_mnist_inrs(tmp_path):
    g = torch.Generator().manual_seed(1)
    table = {}
    for split, ids in (("train", [0, 5]), ("val", [2]), ("test", [9])):
        (tmp_path / split).mkdir()
        for i in ids:
            sd = random_siren_state(g, DWS_KEYS)
            sd["label"] = i % 10
            torch.save(sd, tmp_path / split / f"model_{i}.pth")
        table[split] = [f"fmnist_inrs/{split}/model_{i}.pth" for i in ids]
    (tmp_path / "splits.json").write_text(json.dumps(table))
    zoo = read_dwsnets_fmnist_inrs(tmp_path)
    assert zoo.records["label"].tolist() == [0, 5, 2, 9] and zoo.splits["val"].tolist() == [2]
    assert zoo.records["image_index"].tolist() == [0, 5, 2, 9]
    sd = torch.load(tmp_path / "train" / "model_5.pth", weights_only=True)
    assert torch.equal(zoo.weights["layers.2.bias"][1], sd["seq.2.bias"])
    torch.save({k: v for k, v in sd.items() if k != "label"}, tmp_path / "test" / "model_9.pth")
    with pytest.raises(DataFormatError, match=r"test/model_9\.pth: no 'label'"):
        read_dwsnets_fmnist_inrs(tmp_path)


def test_nfn_sirens(tmp_path):
    g = torch.Generator().manual_seed(2)
    labels = [4, 0, 4, 9, 1]
    states = []
    for idx, lab in enumerate(labels):
        d = tmp_path / f"randinit_smaller_{lab}s"
        d.mkdir(exist_ok=True)
        sd = random_siren_state(g, NFN_KEYS)
        torch.save(sd, d / f"net{idx}.pth")
        states.append(sd)
    aug = tmp_path / "randinit_smaller_aug0_4s"                 # augmented copies are a separate prefix
    aug.mkdir()
    torch.save(states[0], aug / "net0.pth")
    zoo = read_nfn_sirens(tmp_path, split_points=(3, 4))
    assert zoo.records["label"].tolist() == labels
    assert {k: v.tolist() for k, v in zoo.splits.items()} == {"train": [0, 1, 2], "val": [3], "test": [4]}
    # NFN draws on torch.meshgrid 'ij' coordinates (input 0 = row); canonical weights draw the same image here
    lin = torch.linspace(-1, 1, 28)
    coords = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), -1).reshape(-1, 2)
    ref = siren_image(states[3], NFN_KEYS, coords, 0.0).reshape(28, 28)
    assert torch.allclose(render_inrs(zoo.weights[3], (28, 28), 30.0, 0.0)[0, 0], ref, atol=1e-5)
    raw = read_nfn_sirens(tmp_path, canonical=False)
    assert torch.equal(raw.weights["layers.0.weight"][3], states[3]["net.0.linear.weight"])
    assert len(read_nfn_sirens(tmp_path, prefix="randinit_smaller_aug0")) == 1
    (tmp_path / "randinit_smaller_0s" / "net1.pth").unlink()
    with pytest.raises(DataFormatError, match=r"net1\.pth is missing"):
        read_nfn_sirens(tmp_path)


def write_small_cnn_zoo(root, models, steps=(0, 86)):
    rows, layout, names = [], [], ["conv2d", "conv2d_1", "conv2d_2", "dense"]
    for m in models:
        parts = []
        for mod in [m.features[0], m.features[3], m.features[6], m.head]:
            w = mod.weight.detach()
            parts += [(w.permute(2, 3, 1, 0) if w.dim() == 4 else w.T).numpy(), mod.bias.detach().numpy()]
        rows.append(np.concatenate([p.reshape(-1) for p in parts]))
        if not layout:
            start = 0
            for i, p in enumerate(parts):
                layout.append((f"sequential/{names[i // 2]}/{'kernel' if i % 2 == 0 else 'bias'}:0", start,
                               start + p.size, str(tuple(p.shape))))
                start += p.size
    # every model appears at two steps; only the last one is "final"
    weights = np.stack([r * (1 if s == steps[-1] else 0.5) for r in rows for s in steps]).astype(np.float32)
    np.save(root / "weights.npy", weights)
    with open(root / "layout.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["varname", "start_idx", "end_idx", "shape"])
        w.writerows(layout)
    with gzip.open(root / "metrics.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "config.learning_rate", "config.optimizer", "step", "test_accuracy"])
        k = 0
        for i in range(len(models)):
            for s in steps:
                w.writerow([k, 0.01 * (i + 1), "adam" if i % 2 else "sgd", s, 0.1 * i + s / 1000])
                k += 1
    return weights


def test_small_cnn_zoo(tmp_path):
    torch.manual_seed(0)
    models = [SmallCNN() for _ in range(3)]
    weights = write_small_cnn_zoo(tmp_path, models)
    assert weights.shape == (6, 4970)
    zoo = read_small_cnn_zoo(tmp_path)
    assert len(zoo) == 3 and zoo.records["step"].tolist() == [86, 86, 86]
    assert torch.allclose(zoo.records["test_accuracy"], torch.tensor([0.086, 0.186, 0.286], dtype=torch.float64))
    assert zoo.manifest["columns"]["config.optimizer"] == ["sgd", "adam", "sgd"]
    x = torch.randn(4, 1, 28, 28)
    for i, m in enumerate(models):
        sd = zoo.weights.state_dict(i)
        assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
        loaded = SmallCNN()
        loaded.load_state_dict(sd)
        assert torch.allclose(loaded(x), m(x))
    assert len(read_small_cnn_zoo(tmp_path, step=None)) == 6
    assert len(zoo.dataset(target="test_accuracy")) == 3


def test_small_cnn_zoo_damage_is_named(tmp_path):
    write_small_cnn_zoo(tmp_path, [SmallCNN() for _ in range(2)])
    raw = (tmp_path / "weights.npy").read_bytes()
    (tmp_path / "weights.npy").write_bytes(raw[:-1000])
    with pytest.raises(DataFormatError, match=r"weights\.npy"):
        read_small_cnn_zoo(tmp_path)
    (tmp_path / "weights.npy").write_bytes(raw)
    m = tmp_path / "metrics.csv.gz"
    m.write_bytes(m.read_bytes()[:30])
    with pytest.raises(DataFormatError, match=r"metrics\.csv\.gz"):
        read_small_cnn_zoo(tmp_path)
    with gzip.open(m, "wt") as f:
        f.write("step,test_accuracy\n86,0.5\n")
    with pytest.raises(DataFormatError, match=r"metrics\.csv\.gz has 1 rows but .*weights\.npy has 4"):
        read_small_cnn_zoo(tmp_path)


def test_small_cnn_zoo_corrupt_deflate_stream_is_named(tmp_path):
    from test_data_images import corrupt_deflate

    write_small_cnn_zoo(tmp_path, [SmallCNN() for _ in range(2)])
    m = tmp_path / "metrics.csv.gz"
    m.write_bytes(corrupt_deflate(gzip.decompress(m.read_bytes())))
    with pytest.raises(DataFormatError, match=r"metrics\.csv\.gz: not a readable gzip CSV"):
        read_small_cnn_zoo(tmp_path)
