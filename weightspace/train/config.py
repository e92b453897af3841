"""The configuration of a training run: a frozen record, validated before any work, saved as JSON
with the run (``config.json``) so that ``--resume`` and ``weightspace evaluate`` rebuild the same run."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from ..errors import UsageError

__all__ = ["TrainConfig", "augmentations", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """``task``: a name of ``weightspace.train.TASKS``; ``zoo``: the zoo folder; ``model``: a name of
    ``weightspace.train.MODELS`` with ``model_options``; AdamW with ``lr`` and ``weight_decay``, a
    linear warm-up over ``warmup`` epochs then a cosine decay to zero at ``epochs``; gradients clipped
    to norm ``clip`` (0: off); early stopping after ``patience`` epochs without a better validation
    metric (0: off); ``augment``: transform names (see :func:`augmentations`); ``train_size``: use only
    the first N networks of the training split (small-zoo studies, quick runs); ``targets``: a file
    with one target per network instead of the zoo's record; ``seed``: initialization, data order,
    augmentation and dropout; ``precision``: ``fp32`` (default) or ``bf16`` (forward and loss under
    bfloat16 autocast: faster on GPUs with bf16 units, usually slower on CPUs; weights, optimizer and
    gradients stay float32)."""

    task: str
    zoo: str
    model: str = "nggnn"
    model_options: dict = field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup: float = 1.0
    clip: float = 1.0
    patience: int = 0
    augment: tuple[str, ...] = ()
    train_size: int | None = None
    targets: str | None = None
    seed: int = 0
    eval_batch_size: int = 256
    precision: str = "fp32"

    def __post_init__(self):
        object.__setattr__(self, "augment", tuple(self.augment))
        object.__setattr__(self, "model_options", dict(self.model_options))
        self.validate()

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)!r}", _opt(name))
        if self.train_size is not None and (not isinstance(self.train_size, int) or self.train_size <= 0):
            raise UsageError(f"train_size must be a positive integer, got {self.train_size!r}", "--train-size")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise UsageError(f"patience must be >= 0 (0: no early stopping), got {self.patience!r}", "--patience")
        for name, low in (("lr", 0.0), ("weight_decay", None), ("warmup", None), ("clip", None)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (low is not None and v <= low):
                raise UsageError(f"{name} must be a finite number {'> 0' if low is not None else '>= 0'}, "
                                 f"got {v!r}", _opt(name))
        if not isinstance(self.model_options, dict):
            raise UsageError("model options must be a JSON object such as '{\"hidden\": 32}'", "--model-options")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}", "--precision")
        augmentations(self.augment)                      # names and values checked now, not mid-run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> "TrainConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"not valid JSON: {e}", source) from e
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or not {"task", "zoo"} <= set(d) or set(d) - known:
            raise UsageError(f"not a training configuration (fields {sorted(known)})", source)
        return cls(**d)

    def differences(self, other: "TrainConfig") -> list[str]:
        a, b = asdict(self), asdict(other)
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]


def _opt(name: str) -> str:
    return "--" + name.replace("_", "-")


def _floats(value: str, name: str, count: int) -> list[float]:
    try:
        out = [float(v) for v in value.split(":")]
    except ValueError:
        raise UsageError(f"augmentation {name!r} takes numbers, got {value!r}", "--augment") from None
    if not 1 <= len(out) <= count or not all(math.isfinite(v) for v in out):
        want = "1 or 2 finite numbers (a:b)" if count == 2 else "one finite number"
        raise UsageError(f"augmentation {name!r} takes {want}, got {value!r}", "--augment")
    return out


def augmentations(names) -> tuple:
    """``(transform or None, mixup or None)`` from names such as ``permutation``, ``sign``,
    ``scaling=0.5:2``, ``noise=0.01``, ``dropout=0.05``, ``masking=0.1``, ``rotate=15``,
    ``translate=0.1``, ``scale=0.8:1.25``, ``mixup=0.2`` (alpha) or ``mixup=0.2:match``."""
    from .. import augment as A

    ts, mixup = [], None
    for item in names:
        name, _, value = str(item).partition("=")
        if name == "permutation":
            ts.append(A.RandomPermutation())
        elif name == "sign":
            ts.append(A.RandomSignFlip())
        elif name == "scaling":
            ts.append(A.RandomScaling(*_floats(value or "0.5:2", name, 2)))
        elif name in ("noise", "dropout", "masking", "rotate", "translate"):
            v = _floats(value or {"noise": "0.01", "dropout": "0.05", "masking": "0.1", "rotate": "15",
                                  "translate": "0.1"}[name], name, 1)[0]
            make = {"noise": A.GaussianNoise, "dropout": A.WeightDropout, "masking": A.MagnitudeMasking,
                    "rotate": A.INRRotate, "translate": A.INRTranslate}[name]
            ts.append(_make(make, v, name))
        elif name == "scale":
            ts.append(_make(A.INRScale, tuple(_floats(value or "0.8:1.25", name, 2)), name))
        elif name == "mixup":
            alpha, _, align = (value or "0.2").partition(":")
            mixup = _make(lambda a, al=align or "none": A.WeightMixup(a, align=al), _floats(alpha, name, 1)[0], name)
        else:
            raise UsageError(f"unknown augmentation {name!r}; choose from permutation, sign, scaling=a:b, noise=std, "
                             "dropout=p, masking=q, rotate=deg, translate=s, scale=a:b, mixup=alpha[:align]",
                             "--augment")
    return (A.Compose(ts) if ts else None), mixup


def _make(make, value, name):
    try:
        return make(value)
    except (ValueError, TypeError) as e:
        raise UsageError(f"augmentation {name!r}: {e}", "--augment") from e
