"""Shared entry point of the INR recipe scripts: the recipe fixes images, splits and hyperparameters;
the command line sets where files are, how many workers, and optional overrides."""
from __future__ import annotations

import sys
from pathlib import Path

from weightspace.cli import main
from weightspace.data.recipes import RECIPES


def run_recipe(name: str, default_out: str) -> int:
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", str(Path(__file__).resolve().parent / default_out)]
    return main(["fit-inrs", "--source", RECIPES[name].source, *args])
