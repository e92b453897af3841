"""The command line and the demo steps run."""
from __future__ import annotations

from weightspace.cli import main


def test_spec_command(capsys):
    assert main(["spec", "weightspace.models:SmallCNN", "--input-shape", "1,1,28,28"]) == 0
    out = capsys.readouterr().out
    assert "features.0.weight" in out and "scaling" in out


def test_demo_symmetry_and_graph_steps(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "symmetry", "graph"]) == 0
    out = capsys.readouterr().out
    assert "outputs changed by" in out and "bit for bit: True" in out
    assert (tmp_path / "graph_residual_cnn.png").stat().st_size > 10_000
