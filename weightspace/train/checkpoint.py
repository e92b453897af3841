"""The run directory's checkpoint: model weights, optimizer state and the loop's state in ONE
safetensors file (the loop state as JSON metadata), written atomically every epoch, so a run killed
at any moment resumes from a consistent epoch boundary. Data only, never pickles."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..io import CheckpointError, check_finite, save_checkpoint

__all__ = ["save_run_checkpoint", "load_run_checkpoint"]


def save_run_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> Path:
    opt = optimizer.state_dict()
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    for i, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"optim/{i}/{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"])}
    return save_checkpoint(tensors, path, metadata=meta)


def load_run_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore ``model`` (and ``optimizer``) in place from ``path``; returns the loop state."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        state = json.loads(meta["state"])
        groups = json.loads(meta["param_groups"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable training checkpoint (corrupt or truncated?): {e}; "
                              "delete it to restart the run") from e
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    check_finite(model_sd, path)
    try:
        model.load_state_dict(model_sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model of this run: {str(e).splitlines()[0]}") from e
    if optimizer is not None:
        opt_state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim/"):
                _, i, name = k.split("/", 2)
                opt_state.setdefault(int(i), {})[name] = v
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return state
