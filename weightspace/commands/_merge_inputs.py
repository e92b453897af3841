"""The inputs of ``weightspace merge``, checked before any work or any write.

Decisions:

- The options are checked first, from the parsed arguments alone (finite floats, ranges, counts, the
  method's number of checkpoints, where the outputs go); then the model is built, the checkpoints and
  the data are loaded and checked (finite values, floating-point weights, inputs and targets the model
  can be scored on). Only then does merging start, so a bad input never costs a long alignment and
  never leaves a written checkpoint behind.
- Checkpoints, data and model are brought to one compute dtype: float32, or float64 when a checkpoint
  holds float64 (float16 / bfloat16 checkpoints are computed on in float32). The merged checkpoint is
  written in the dtypes of the reference checkpoint: the first one, or ``--base`` for the task methods.
- Every problem is a :class:`~weightspace.errors.UsageError` naming the option or file, or a
  :class:`~weightspace.io.CheckpointError` naming the file and the tensor.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import torch

from ..errors import UsageError
from ..io import CheckpointError, check_finite, first_nonfinite, load_checkpoint

from ._hf import is_hf
from .merge import ALIGN, MANY, TASK  # noqa: E402  (the method lists live with the command's options)


def check_arguments(args) -> None:
    """Refuse bad options before anything is loaded: every message names the option."""
    m, n = args.method, len(args.checkpoints)
    for option, value in (("--alpha", args.alpha), ("--scale", args.scale)):
        if not math.isfinite(value):
            raise UsageError(f"must be a finite number, got {value}", option)
    if not 0 <= args.density <= 1:
        raise UsageError(f"the fraction of task-vector entries TIES keeps must be in [0, 1], got {args.density}",
                         "--density")
    if not 0 <= args.drop_rate < 1:
        raise UsageError(f"the DARE drop probability must be in [0, 1), got {args.drop_rate}", "--drop-rate")
    if args.points < 3:
        raise UsageError(f"the barrier curve needs at least 3 points (both ends and one between), got {args.points}",
                         "--points")
    if args.steps < 1:
        raise UsageError(f"must be at least 1, got {args.steps}", "--steps")
    if m in ALIGN and n != 2:
        raise UsageError(f"--method {m} merges two checkpoints, got {n} (merge-many and average take more)",
                         "checkpoints")
    if m in MANY and n < 2:
        raise UsageError(f"--method {m} merges two or more checkpoints, got {n}", "checkpoints")
    if m in TASK and not args.base:
        raise UsageError(f"--method {m} needs the model the checkpoints were fine-tuned from", "--base")
    if args.base and m not in TASK:
        raise UsageError(f"only task-arithmetic, ties and dare read a base model, not --method {m}", "--base")
    if args.weights is not None:
        parse_weights(args)
    if args.input_shape is not None:
        parse_input_shape(args.input_shape)
    needs_data = m in ("activation-matching", "ste") or args.reset_bn or args.repair
    if needs_data and args.data is None:
        extra = " with --reset-bn/--repair" if args.reset_bn or args.repair else ""
        raise UsageError(f"--method {m}{extra} runs the networks on data", "--data")
    if args.data is None and args.input_shape is None and not is_hf(args.model):
        raise UsageError("give --data or --input-shape so the model can be traced", "--input-shape")
    if args.plot:
        if m not in ALIGN or args.data is None:
            raise UsageError("the barrier plot needs a two-checkpoint method (naive, weight-matching, ...) and "
                             "--data with targets", "--plot")
        check_output_path(args.plot, "--plot")
    check_output_path(args.out, "--out")


def parse_weights(args) -> list[float] | None:
    """``--weights`` as floats: one finite number per checkpoint, read by average and the task methods."""
    if args.weights is None:
        return None
    if args.method not in ["average", *TASK]:
        raise UsageError(f"only average and the task methods weight the checkpoints, not --method {args.method}",
                         "--weights")
    try:
        w = [float(x) for x in args.weights.split(",")]
    except ValueError:
        raise UsageError(f"expected comma-separated numbers such as 1,3, got {args.weights!r}", "--weights") from None
    if not all(math.isfinite(x) for x in w):
        raise UsageError(f"every weight must be a finite number, got {args.weights!r}", "--weights")
    if len(w) != len(args.checkpoints):
        raise UsageError(f"{len(w)} weights for {len(args.checkpoints)} checkpoints: give one per checkpoint",
                         "--weights")
    if args.method == "average" and sum(w) == 0:
        raise UsageError(f"the weights sum to zero, so they cannot be normalized: {args.weights!r}", "--weights")
    return w


def parse_input_shape(text: str) -> list[int]:
    """``"2,64"`` -> ``[2, 64]``: positive integers."""
    try:
        shape = [int(s) for s in text.split(",")]
    except ValueError:
        shape = []
    if not shape or any(s < 1 for s in shape):
        raise UsageError(f"expected positive integers separated by commas such as 2,64, got {text!r}",
                         "--input-shape")
    return shape


def check_output_path(path: str, option: str) -> None:
    """The file ``path`` can be created: it is not a folder, the nearest existing folder above it is
    a folder and writable."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p} is a folder; give the file to write, such as {p / 'merged.safetensors'}", option)
    parent = p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{parent} is a file, so {p} cannot be created under it", option)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"no permission to create files in {parent}", option)


def build_model(model: str, kwargs_text: str) -> torch.nn.Module:
    """Call the ``--model`` factory with the ``--model-kwargs`` JSON object, in eval mode.

    The keywords are checked against the factory's signature first (unknown and missing ones named);
    whatever the factory itself raises for the values it got is reported as a problem of
    ``--model-kwargs``: the factory is the user's choice of code, called with the user's arguments."""
    from ..cli import load_factory

    factory = load_factory(model)
    try:
        kwargs = json.loads(kwargs_text)
    except json.JSONDecodeError as e:
        raise UsageError(f"not valid JSON: {e}", "--model-kwargs") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"expected a JSON object of keyword arguments such as '{{\"widths\": [64, 10]}}', "
                         f"got a JSON {type(kwargs).__name__}", "--model-kwargs")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):          # some builtins have none: the call below decides
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            raise UsageError(f"{model} cannot be called with {json.dumps(kwargs)}: {e}; its parameters are "
                             f"({', '.join(signature.parameters)})", "--model-kwargs") from None
    try:
        net = factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's factory, the user's arguments
        raise UsageError(f"{model}(**{json.dumps(kwargs)}) failed: {type(e).__name__}: {e}", "--model-kwargs") from e
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"{model} returned a {type(net).__name__}, not a torch.nn.Module", "--model")
    return net.eval()


def load_states(paths: list[str]) -> list[dict[str, torch.Tensor]]:
    """Load each checkpoint as data (a file, or a Hugging Face ``save_pretrained`` folder); one holding
    NaN or Inf is refused naming the file and tensor."""
    from ._hf import load_folder

    states = []
    for path in paths:
        state = load_folder(path) if Path(path).is_dir() else load_checkpoint(path)
        check_finite(state, path)
        states.append(state)
    return states


def load_data(text: str | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(inputs, targets or None)`` from ``--data``: 'digits', 'digits-images', or a file with tensors
    ``x`` (and ``y``; or ``inputs``/``targets``, ``data``/``labels``), checked: at least one sample,
    finite values, as many targets as inputs."""
    if text is None:
        return None
    if text in ("digits", "digits-images"):
        from ..data.digits import digits
        (x, y), _ = digits(image=text == "digits-images", test_fraction=0.0)
        return x, y
    where = f"--data {text}"
    tensors = load_checkpoint(text)
    for xk, yk in (("x", "y"), ("inputs", "targets"), ("data", "labels")):
        if xk in tensors:
            break
    else:
        raise CheckpointError(f"no tensor named 'x' (found: {', '.join(sorted(tensors)) or 'none'}) ({text})")
    x, y = tensors[xk], tensors.get(yk)
    check_finite({k: tensors[k] for k in (xk, yk) if k in tensors}, text)
    if x.dim() == 0 or x.shape[0] == 0:
        raise UsageError(f"'{xk}' holds no samples (shape {tuple(x.shape)}); give at least one", where)
    if y is not None and (y.dim() == 0 or y.shape[0] != x.shape[0]):
        raise UsageError(f"'{yk}' holds {y.shape[0] if y.dim() else 'a scalar, not'} targets for the "
                         f"{x.shape[0]} inputs in '{xk}': give one target per input", where)
    return x, y


def compute_dtype(model: torch.nn.Module, states: list[dict[str, torch.Tensor]]) -> torch.dtype:
    """float32, or float64 when the model or a checkpoint holds float64 weights."""
    dtype = torch.float32
    for t in [*model.state_dict().values(), *(v for s in states for v in s.values())]:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def to_dtype(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], dtype: torch.dtype,
             source: str) -> dict[str, torch.Tensor]:
    """``state`` with the model's floating entries in ``dtype`` and its other entries (step counters) in
    the model's dtype. An integer or bool tensor where the model has a floating one is refused: it is
    not a network's weights (merging would round or mean nothing)."""
    out = {}
    for k, v in state.items():
        m = model_state.get(k)
        if m is not None and m.is_floating_point():
            if not v.is_floating_point():
                raise CheckpointError(f"tensor '{k}' has dtype {str(v.dtype).removeprefix('torch.')} where the "
                                      f"model has floating-point weights: merge reads floating-point weights only "
                                      f"({source})")
            v = v.to(dtype)
        elif m is not None:
            v = v.to(m.dtype)
        out[k] = v
    return out


def check_targets(model: torch.nn.Module, data, where: str) -> None:
    """Targets the model's outputs can be scored on: integer class ids in ``0..C-1`` shaped like the
    outputs without their class axis, or floating-point targets shaped like the outputs."""
    x, y = data
    if y is None:
        return
    with torch.no_grad():
        out = model(x[:2])
    out = out[0] if isinstance(out, (tuple, list)) else out
    per_sample = tuple(out.shape[1:])
    if y.is_floating_point():
        if tuple(y.shape[1:]) != per_sample:
            classes = f"integer class ids in 0..{out.shape[-1] - 1}" if out.dim() >= 2 else "integer class ids"
            raise UsageError(f"the targets are floating-point values of shape {tuple(y.shape[1:])} per sample but "
                             f"the model outputs {per_sample}: give {classes} for a classifier, or targets "
                             f"shaped like the outputs", where)
        return
    if y.dtype == torch.bool or y.is_complex():
        raise UsageError(f"targets of dtype {str(y.dtype).removeprefix('torch.')}: give integer class ids or "
                         f"floating-point targets", where)
    if out.dim() < 2 or tuple(y.shape[1:]) != per_sample[:-1]:
        raise UsageError(f"integer targets of shape {tuple(y.shape[1:])} per sample do not fit the model's outputs "
                         f"{per_sample} (class ids need one target per output row)", where)
    classes, lo, hi = out.shape[-1], int(y.min()), int(y.max())
    if lo < 0 or hi >= classes:
        raise UsageError(f"the targets hold class ids {lo}..{hi}, out of range for the model's {classes} outputs: "
                         f"class ids must be in 0..{classes - 1}", where)


def finish(merged: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], method: str) -> dict:
    """The merged network in the reference checkpoint's dtypes, refused (nothing written) when a value
    is NaN or Inf: finite inputs can still overflow (a large --scale, or the range of float16)."""
    out = {k: v.to(reference[k].dtype) if k in reference else v for k, v in merged.items()}
    bad = first_nonfinite(out)
    if bad is not None:
        name, nan, inf, numel = bad
        dtype = str(out[name].dtype).removeprefix("torch.")
        raise UsageError(f"the merged network's tensor '{name}' ({dtype}) holds {nan} NaN and {inf} Inf values of "
                         f"{numel}, so nothing was written: check --scale, --weights and --alpha, or whether the "
                         f"result fits the checkpoints' dtype", f"--method {method}")
    return out
