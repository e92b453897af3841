"""Hugging Face models in ``weightspace merge``: ``--model hf:PATH`` and checkpoint folders.

Decisions:

- ``hf:PATH`` names a local model folder (or its ``config.json``): the architecture is built from the
  config alone (``config.architectures[0]`` from ``transformers``, else ``AutoModel``), with random
  weights, never downloaded; the checkpoints to merge bring the weights. ``transformers`` is imported
  only here, so the library does not depend on it.
- A checkpoint may be a folder written by ``save_pretrained``: its ``model.safetensors``, or every
  shard its ``model.safetensors.index.json`` lists. Weights tied to another tensor (GPT-2's
  ``lm_head.weight`` is ``transformer.wte.weight``) are stored once by ``save_pretrained``; they are
  filled back from the tensor they are tied to, so every checkpoint matches the traced spec.
- The example input for tracing is what the model's ``main_input_name`` asks for: 8 token ids
  (and as many decoder ids for encoder-decoders), or one image of the config's size.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..io import load_checkpoint

PREFIX = "hf:"


def is_hf(model: str) -> bool:
    return model.startswith(PREFIX)


def _folder(text: str) -> Path:
    path = Path(text[len(PREFIX):]).expanduser()
    folder = path.parent if path.name == "config.json" else path
    if not (folder / "config.json").is_file():
        raise UsageError(f"{path} is not a Hugging Face model folder: no config.json in {folder} (give the folder "
                         f"that save_pretrained wrote, or its config.json)", "--model")
    return folder


def build_hf_model(text: str) -> torch.nn.Module:
    """The architecture of the model folder ``hf:PATH``, built from its config with random weights."""
    folder = _folder(text)
    try:
        import transformers
    except ImportError:
        raise UsageError("--model hf:... needs the transformers package: pip install transformers", "--model") from None
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot read the config in {folder}: {e}", "--model") from None
    classes = [getattr(transformers, a) for a in (config.architectures or []) if hasattr(transformers, a)]
    try:
        model = classes[0](config) if classes else transformers.AutoModel.from_config(config)
    except Exception as e:  # noqa: BLE001 - the user's config decides what the constructor raises
        raise UsageError(f"cannot build a model from the config in {folder}: {type(e).__name__}: {e}", "--model") from e
    return model.eval()


def example_input(model: torch.nn.Module, dtype: torch.dtype, seed: int) -> Any:
    """An input to trace ``model`` with: token ids, or an image, as its ``main_input_name`` asks."""
    config, gen = model.config, torch.Generator().manual_seed(seed)
    name = getattr(model, "main_input_name", "input_ids")
    if name == "input_ids":
        ids = torch.randint(0, int(config.vocab_size), (1, 8), generator=gen)
        return {"input_ids": ids, "decoder_input_ids": ids} if getattr(config, "is_encoder_decoder", False) else ids
    if name == "pixel_values":
        size = config.image_size if isinstance(config.image_size, int) else tuple(config.image_size)
        hw = (size, size) if isinstance(size, int) else size
        return torch.randn(1, int(config.num_channels), *hw, generator=gen, dtype=dtype)
    raise UsageError(f"{type(model).__name__} reads '{name}', for which no example input is made here: give --data "
                     f"with inputs of that kind", "--data")


def load_folder(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` folder (one file or the shards of its index)."""
    folder = Path(path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise UsageError(f"{folder} holds neither model.safetensors nor model.safetensors.index.json (write it with "
                         f"save_pretrained(..., safe_serialization=True))", "checkpoints")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_checkpoint(folder / name))
    return state


def fill_tied(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with each tensor the model ties to another one (and ``save_pretrained`` left out)
    filled from the tensor it is tied to."""
    reference = model.state_dict()
    by_storage: dict[tuple, list[str]] = {}
    for key, t in reference.items():
        by_storage.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []).append(key)
    out = dict(state)
    for keys in by_storage.values():
        present = [k for k in keys if k in out]
        for k in keys:
            if k not in out and present:
                out[k] = out[present[0]]
    return out
