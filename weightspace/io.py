"""Checkpoints are data, never code: safetensors or weights-only torch files, written atomically.

Decisions: a file is written to a temp name and renamed, so a killed run never leaves half a
checkpoint; it gets the permissions of any other new file, ``0666 & ~umask`` (:func:`apply_default_mode`),
not the 0600 of the temp file. Loading does not judge the values; commands that read checkpoints call
:func:`check_finite`, which names the file and the first tensor holding NaN or Inf.
"""
from __future__ import annotations

import errno
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
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not a checkpoint file", str(path))
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
    """Write a state dict (or a one-network WeightSpace) to ``path`` atomically (temp file, rename),
    with mode ``0666 & ~umask``. ``.safetensors`` paths use safetensors; others ``torch.save`` of plain
    tensors. A ``path`` that is a folder raises :class:`IsADirectoryError` before anything is written."""
    from .space import WeightSpace

    if isinstance(state, WeightSpace):
        if state.batch_size != 1:
            raise ValueError(f"save_checkpoint writes one network; this weight space holds {state.batch_size}")
        state = state.state_dict(0)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder; give a file name to write the checkpoint to", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, tmp, metadata=dict(metadata) if metadata else None)
        else:
            torch.save(tensors, tmp)
        apply_default_mode(tmp)              # before the rename: the file appears with its final mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def first_nonfinite(state: Mapping[str, torch.Tensor]) -> tuple[str, int, int, int] | None:
    """``(name, nan count, inf count, numel)`` of the first floating-point tensor of ``state`` (in its
    order) holding NaN or Inf; None when every value is finite."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                nan = int(torch.isnan(t).sum())
                return name, nan, int(bad.sum()) - nan, t.numel()
    return None


def check_finite(state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming ``source`` (the file) and the first tensor holding NaN or
    Inf. Every command that reads checkpoints calls it: a diverged or damaged network otherwise
    surfaces later as a numerical error (a failed linear assignment) or as a NaN result."""
    bad = first_nonfinite(state)
    if bad is not None:
        name, nan, inf, numel = bad
        raise CheckpointError(f"tensor '{name}' holds {nan} NaN and {inf} Inf values of {numel} (the network "
                              f"diverged or the file is damaged; use another checkpoint) ({source})")


def current_umask() -> int:
    """The process umask. Read from /proc on Linux, since setting and restoring it (the portable way)
    briefly gives files created by other threads in that moment the wrong mode."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def apply_default_mode(path: str | os.PathLike) -> None:
    """Give a file written through a temp file (``mkstemp`` makes it 0600) the mode any new file gets,
    ``0666 & ~umask``."""
    os.chmod(path, 0o666 & ~current_umask())
