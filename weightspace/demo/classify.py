"""Classify INRs by their digit: a flat baseline, equivariant layers and a graph metanetwork, trained.

Every model trains with ``weightspace.train`` (the code path of ``weightspace train``) on the digits INR
zoo (1,797 SIRENs of scikit-learn's digits, fitted here when absent) and is scored on its test split.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

# (row label, model name, options, epochs, learning rate): sized for about two minutes on 2 CPU cores
MODELS = [("flat MLP on the weights (baseline)", "flat-mlp", {}, 10, 1e-3),
          ("UNF: equivariant layers from the spec", "unf", {"channels": [16, 16]}, 10, 1e-3),
          ("GMN + probe features (graph metanet)", "gmn", {"hidden": 32, "layers": 2, "probe": 64}, 10, 2e-3)]


def run(out_dir: Path, models=MODELS) -> list[dict]:
    from ..cli import main as cli
    from ..train import TrainConfig, train

    zoo = Path(out_dir) / "digits-inr"
    if not (zoo / "manifest.json").is_file():
        print(f"Fitting the digits INR zoo ({zoo}): weightspace fit-inrs --source digits --out {zoo}")
        cli(["fit-inrs", "--source", "digits", "--out", str(zoo), "--workers", "2", "--no-progress"])
    else:
        print(f"Using the digits INR zoo in {zoo}")
    rows = []
    for label, name, options, epochs, lr in models:
        run_dir = Path(out_dir) / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)               # the demo trains afresh each time
        config = TrainConfig(task="digits-inr", zoo=str(zoo), model=name, model_options=options, epochs=epochs,
                             batch_size=32, lr=lr, seed=0)
        m = train(config, run_dir, progress=True)
        rows.append({"label": label, **m})
    print(f"\nTest accuracy on {rows[0]['train_networks']} training INRs (chance: 10%; the weights of an INR of an "
          "8x8 digit are mostly its random initialization:\nit reaches 40 dB in ~60 steps; weight-only models need "
          "larger images such as MNIST-INR, see the README's reproductions):\n")
    print(f"  {'model':40s} {'test acc':>8s} {'params':>9s} {'epochs':>6s} {'train s':>8s}")
    for r in rows:
        print(f"  {r['label']:40s} {100 * r['test']['accuracy']:7.1f}% {r['parameters']:9,d} {r['epochs_run']:6d} "
              f"{r['train_seconds']:8.1f}")
    print(f"\nRuns (config.json, metrics.json, curve.png, best.safetensors): {(Path(out_dir) / 'runs').resolve()}")
    print("The same from the command line: weightspace train --task digits-inr --zoo "
          f"{zoo} --model gmn --model-options '{json.dumps(MODELS[2][2])}' --out runs/gmn")
    return rows
