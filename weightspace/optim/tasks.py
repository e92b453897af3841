"""Task families for learned optimizers: small classifiers on a data set, in functional form.

Design decision: a task is (architecture at some width, an initialization seed, a stream of
minibatches). Meta-training needs the inner training to be a pure function of a params dict, so a
family gives a template module per width (traced once into its spec) and evaluates B networks with
``torch.func.functional_call``; BatchNorm running statistics are buffers passed in and returned,
never optimized. The default data are the embedded scikit-learn digits (``weightspace.data.digits``);
any ``(x, y)`` tensors (MNIST or Fashion-MNIST files read with ``weightspace.data``) serve as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import UsageError
from ..spec.spec import WeightSpaceSpec

Tensors = dict[str, torch.Tensor]


def make_classifier(kind: str, width: int, in_shape: Sequence[int], classes: int, depth: int = 2) -> nn.Module:
    """``"mlp"``: ``depth`` hidden ReLU layers of ``width``; ``"cnn"``: ``depth`` 3x3 convs of ``width``
    channels (bias-free, each followed by BatchNorm and ReLU), global average pooling, a linear head."""
    if kind == "mlp":
        dims = [int(torch.tensor(in_shape).prod())] + [width] * depth
        layers: list[nn.Module] = [nn.Flatten()] if len(in_shape) > 1 else []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(dims[-1], classes))
    if kind == "cnn":
        chans = [in_shape[0]] + [width] * depth
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], classes))
    raise UsageError(f"unknown task architecture {kind!r}; use 'mlp' or 'cnn'", "kind")


@dataclass
class TaskFamily:
    """Classifiers of ``kind`` at ``widths`` trained on ``(x, y)`` with minibatches of ``batch_size``."""

    x: torch.Tensor
    y: torch.Tensor
    kind: str = "mlp"
    widths: tuple[int, ...] = (32,)
    depth: int = 2
    batch_size: int = 128
    num_classes: int | None = None                # default: the largest label + 1
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if len(self.x) != len(self.y) or len(self.y) == 0:
            raise UsageError(f"x and y must hold the same number (> 0) of examples, got {len(self.x)} and "
                             f"{len(self.y)}", "TaskFamily")
        self.classes = self.num_classes or int(self.y.max()) + 1

    def module(self, width: int) -> tuple[nn.Module, WeightSpaceSpec]:
        """The template module at ``width`` (weights are placeholders) and its traced spec."""
        if width not in self._cache:
            m = make_classifier(self.kind, width, tuple(self.x.shape[1:]), self.classes, self.depth)
            self._cache[width] = (m, WeightSpaceSpec.from_module(m, self.x[:2]))
        return self._cache[width]

    def network(self, width: int, seed: int) -> nn.Module:
        """A freshly initialized classifier at ``width``, a function of ``seed`` alone (torch's module
        init reads the global generator: it is seeded inside ``fork_rng`` and left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return make_classifier(self.kind, width, tuple(self.x.shape[1:]), self.classes, self.depth)

    def init(self, width: int, seeds: Sequence[int]) -> tuple[Tensors, Tensors]:
        """``(params, buffers)`` of ``len(seeds)`` freshly initialized networks, ``[B, *shape]`` each."""
        mods = [self.network(width, s) for s in seeds]
        params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in mods])
                  for n, _ in mods[0].named_parameters()}
        buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in mods]) for n, _ in mods[0].named_buffers()}
        return params, buffers

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.y), (self.batch_size,), generator=generator)
        return self.x[idx], self.y[idx]

    def losses(self, width: int, params: Tensors, buffers: Tensors, x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, Tensors]:
        """Per-network training losses ``[B]`` (train mode) and the updated buffers."""
        module, _ = self.module(width)
        module.train()
        out, new_buffers = [], {n: [] for n in buffers}
        for b in range(next(iter(params.values())).shape[0]):
            bufs = {n: t[b].clone() for n, t in buffers.items()}
            logits = functional_call(module, {**{n: t[b] for n, t in params.items()}, **bufs}, (x,))
            out.append(F.cross_entropy(logits, y))
            for n in buffers:
                new_buffers[n].append(bufs[n])
        return torch.stack(out), {n: torch.stack(v) for n, v in new_buffers.items()}


def digits_family(kind: str = "mlp", widths: Sequence[int] = (32,), *, depth: int = 2, batch_size: int = 128,
                  split: str = "train") -> TaskFamily:
    """Digits (8x8, 10 classes) classifiers; ``split`` ``"train"`` or ``"test"`` of the seeded split."""
    from ..data.digits import digits

    (xtr, ytr), (xte, yte) = digits(image=(kind == "cnn"))
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return TaskFamily(x, y, kind, tuple(widths), depth, batch_size, 10)


def image_family(source: str, root: str, kind: str = "mlp", widths: Sequence[int] = (32,), *, size: int = 8,
                 depth: int = 2, batch_size: int = 128, split: str = "train", limit: int | None = None) -> TaskFamily:
    """MNIST / Fashion-MNIST (IDX files under ``root``, :func:`weightspace.data.load_images`) classifiers
    on images average-pooled to ``size x size`` (8: GradMetaNet's 8x8 Fashion-MNIST MLPs) and
    standardized with the training split's mean and standard deviation, as the digits are;
    ``limit``: the first N images of the split."""
    from ..data.images import load_images

    if not 1 <= size <= 28:
        raise UsageError(f"size must be between 1 and 28, got {size}", "image_family")
    train, _ = load_images(source, root, "train")
    images, labels = load_images(source, root, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.unsqueeze(1), size)

    reference = pool(train[: limit or len(train)])
    x = (pool(images) - reference.mean()) / reference.std()
    return TaskFamily(x if kind == "cnn" else x.flatten(1), labels, kind, tuple(widths), depth, batch_size, 10)
