"""A smoke run of examples/merge_models.py on tiny settings: two networks, then three (merge of all)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("merge_models", ROOT / "examples" / "merge_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n", [2, 3])
def test_merge_models_example_runs(tmp_path, capsys, n):
    example = load_example()
    out = tmp_path / "out"
    assert example.main(["--n", str(n), "--widths", "64", "16", "10", "--epochs", "2", "--points", "3",
                         "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "naive" in text and "weight matching" in text and "aligned to 0" in text
    assert ("MergeMany" in text) == (n > 2)
    result = json.loads((out / "results.json").read_text())
    assert len(result["barriers"]) == 2 * (n - 1)
    assert len(result["merged"]) == n + 2 + (n > 2)
    assert all(0 <= r["accuracy"] <= 1 for r in result["merged"])
    assert (out / "merge_barrier.png").stat().st_size > 0


def test_merge_models_refuses_bad_options():
    example = load_example()
    with pytest.raises(SystemExit):
        example.parse(["--n", "1"])
    with pytest.raises(SystemExit):
        example.parse(["--widths", "32", "10"])
