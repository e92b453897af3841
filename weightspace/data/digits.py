"""The embedded digits data set (scikit-learn, 1,797 8x8 images) as a seeded train / test split, and
a small seeded training loop: what the merge demo, ``weightspace merge --data digits``, the tests and
the benchmarks train and evaluate classifiers on."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["digits", "train_classifier"]


def digits(image: bool = False, test_fraction: float = 0.3, seed: int = 0):
    """``(x_train, y_train), (x_test, y_test)``: pixels scaled to [0, 1] and standardized, as
    ``[N, 64]`` or ``[N, 1, 8, 8]`` when ``image``; a seeded split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 0.1)
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    if image:
        x = x.view(-1, 1, 8, 8)
    n_test = int(len(y) * test_fraction)
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def train_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 30, lr: float = 1e-3,
                     batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0) -> torch.nn.Module:
    """Adam on cross-entropy with seeded shuffling; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for s in range(0, len(y), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
