"""Checkpoints are data, never code: safetensors or weights-only torch files, written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as weights; the message names the file."""


_WRAPPERS = ("state_dict", "model_state_dict", "model", "weights", "params")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from ``path``: a ``.safetensors`` file or a torch file loaded with
    ``weights_only=True`` (a dict of tensors, possibly under a ``state_dict`` / ``model`` key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated zip archives, code objects refused by weights_only
        raise CheckpointError(f"{path} cannot be loaded as a weights-only torch checkpoint (corrupt, truncated, "
                              f"or it contains code): {type(e).__name__}: {e}") from e
    return _as_state_dict(obj, path)


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], Mapping):
                return _as_state_dict(obj[key], path)
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")


def save_checkpoint(state: Any, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict (or a one-network WeightSpace) to ``path`` atomically (temp file, rename).
    ``.safetensors`` paths use safetensors; others ``torch.save`` of plain tensors."""
    from .space import WeightSpace

    if isinstance(state, WeightSpace):
        if state.batch_size != 1:
            raise ValueError(f"save_checkpoint writes one network; this weight space holds {state.batch_size}")
        state = state.state_dict(0)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, tmp, metadata=dict(metadata) if metadata else None)
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
