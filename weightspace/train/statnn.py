"""The StatNN baseline of generalization prediction (Unterthiner et al., 2020, "Predicting Neural
Network Accuracy from Weights"): a few statistics of every weight tensor, fed to gradient boosting
or an MLP.

Decisions:

* Features: for each learned-on tensor of the spec (weights and biases, in spec order) its mean,
  variance (population, ``unbiased=False``) and the 0, 25,
  50, 75, 100 % quantiles (linear interpolation, as ``torch.quantile``): 7 numbers per tensor,
  computed in float64 for all networks at once (one sort per tensor, no loop over networks; a sort
  rather than ``torch.quantile``, which refuses inputs above 16M elements, i.e. large zoos).
  The features are invariant under neuron permutations (they see each tensor as a multiset) but
  not under the scaling symmetry of ReLU networks; that is the baseline as published.
* Regressors from scikit-learn, seeded through ``random_state`` (no global random state touched):
  ``"gbt"`` is ``GradientBoostingRegressor`` (exact trees; on zoos of hundreds to thousands of
  networks they fit in seconds, and ``HistGradientBoostingRegressor`` scored the same validation
  tau, 0.80, on a 500-CNN digits zoo); ``"mlp"`` is a ``StandardScaler`` + ``MLPRegressor``
  pipeline. ``**options`` override the estimator's defaults (tune them on a validation split, never
  on the test split). The defaults were chosen on the validation splits of that zoo (3 seeds): the
  MLP needs strong weight decay (``alpha=1``: validation tau 0.79; ``alpha=1e-3``: 0.56 to 0.69, it
  overfits ~350 networks); the trees barely depend on their settings (0.77 to 0.82 over four).
* ``threads`` (default 1) caps the BLAS threads while fitting and predicting, restored afterwards
  (``threadpoolctl``): matrices this small gain nothing from threads, and on a shared machine the
  sklearn MLP ran 10 to 50 times slower with NumPy's default of one thread per core.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..space import WeightSpace
from ..spec import WeightSpaceSpec

__all__ = ["STATNN_STATS", "StatNN", "fit_statnn", "statnn_feature_names", "statnn_features"]

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
STATNN_STATS = ("mean", "var", "q0", "q25", "q50", "q75", "q100")

GBT_DEFAULTS = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "subsample": 0.8}
MLP_DEFAULTS = {"hidden_layer_sizes": (64, 64), "alpha": 1.0, "learning_rate_init": 1e-3, "max_iter": 500}


def _quantiles(x: torch.Tensor, qs=QUANTILES) -> torch.Tensor:
    """``[B, len(qs)]`` quantiles of each row of ``x`` ``[B, n]``, as ``torch.quantile(..., 'linear')``."""
    s = x.sort(dim=1).values
    pos = torch.tensor(qs, dtype=x.dtype, device=x.device) * (x.shape[1] - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = pos - lo
    return s[:, lo] + (s[:, hi] - s[:, lo]) * frac


def statnn_features(ws: WeightSpace) -> torch.Tensor:
    """``[B, 7 * T]`` float64: mean, variance, 0/25/50/75/100 % quantiles of each of the ``T``
    learned-on tensors (names: :func:`statnn_feature_names`)."""
    b = ws.batch_size
    cols = []
    for name in ws.spec.weight_names:
        x = ws[name].detach().reshape(b, -1).to(torch.float64)
        cols += [x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True), _quantiles(x)]
    return torch.cat(cols, dim=1)


def statnn_feature_names(spec: WeightSpaceSpec) -> list[str]:
    """``"<tensor>:<stat>"`` for each column of :func:`statnn_features`."""
    return [f"{name}:{s}" for name in spec.weight_names for s in STATNN_STATS]


@dataclass
class StatNN:
    """A fitted StatNN regressor: ``predict(ws)`` gives one value per network (``Tensor[B]``, float32)."""

    spec: WeightSpaceSpec
    method: str
    estimator: object
    threads: int | None = 1

    def predict(self, ws: WeightSpace) -> torch.Tensor:
        diff = self.spec.first_difference(ws.spec)
        if diff:
            raise UsageError(f"the networks are not the architecture StatNN was fitted on: {diff}", "ws")
        with _blas_threads(self.threads):
            out = self.estimator.predict(statnn_features(ws).numpy())
        return torch.as_tensor(out, dtype=torch.float32)


def fit_statnn(train_ws: WeightSpace, train_y: torch.Tensor, method: str = "gbt", seed: int = 0,
               threads: int | None = 1, **options) -> StatNN:
    """Fit StatNN on ``train_ws`` with one target per network (e.g. test accuracy). ``method``:
    ``"gbt"`` (gradient-boosted trees) or ``"mlp"``; ``seed``: the estimator's ``random_state``;
    ``threads``: BLAS threads while fitting and predicting (None: leave them as they are);
    ``options``: estimator arguments replacing :data:`GBT_DEFAULTS` / :data:`MLP_DEFAULTS`."""
    y = torch.as_tensor(train_y).detach().double().flatten()
    if y.shape[0] != train_ws.batch_size:
        raise UsageError(f"{y.shape[0]} targets for {train_ws.batch_size} networks", "train_y")
    if train_ws.batch_size < 2:
        raise UsageError("StatNN needs at least 2 training networks", "train_ws")
    if method not in ("gbt", "mlp"):
        raise UsageError(f"unknown StatNN method {method!r}; choose gbt or mlp", "method")
    x = statnn_features(train_ws)
    if not torch.isfinite(x).all() or not torch.isfinite(y).all():
        raise UsageError("the training weights or targets hold NaN or Inf", "train_ws")
    x = x.numpy()
    try:
        est = _estimator(method, seed, options)
        with _blas_threads(threads), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Maximum iterations.*")   # max_iter is the budget
            est.fit(x, y.numpy())
    except (TypeError, ValueError) as e:
        raise UsageError(f"StatNN {method} could not be fitted with options {options}: {e}", "options") from e
    return StatNN(train_ws.spec, method, est, threads)


def _estimator(method: str, seed: int, options: dict):
    if method == "gbt":
        from sklearn.ensemble import GradientBoostingRegressor
        return GradientBoostingRegressor(**{**GBT_DEFAULTS, **options}, random_state=seed)
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), MLPRegressor(**{**MLP_DEFAULTS, **options}, random_state=seed))


def _blas_threads(threads: int | None):
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=int(threads))
