"""Training metanetworks on zoos: ``train(TrainConfig(...), out_dir)`` and ``evaluate(run_dir)``.

* :class:`TrainConfig` (:mod:`.config`): the run, validated up front and saved with it;
* :class:`Task` (:mod:`.tasks`): a zoo target, a loss, metrics; ``classification()``,
  ``regression()`` and the named tasks of ``TASKS`` (``mnist-inr``, ``digits-inr``, ``generalization``);
* ``build_model`` / ``register_model`` (:mod:`.models`): metanetworks by name (``flat-mlp``, ``unf``,
  ``nfn-np``, ``nfn-hnp``, ``nggnn``, ``ngt``, ``gmn``, ``scalegmn``);
* :func:`train` / :func:`evaluate` (:mod:`.trainer`): the loop, checkpoints, metrics and plots.
"""
from .config import PRECISIONS, TrainConfig, augmentations
from .distributed import Ranks
from .data import TaskData, load_task_data, read_targets
from .editing import delta_scales, dilation_targets, editing_task, render_siren
from .metrics import accuracy, kendall_tau, mse, r2_score
from .models import MODELS, build_model, model_names, register_model
from .statnn import STATNN_STATS, StatNN, fit_statnn, statnn_feature_names, statnn_features
from .tasks import TASKS, Task, classification, get_task, regression
from .trainer import evaluate, lr_at, predict_split, train

__all__ = ["TrainConfig", "augmentations", "TaskData", "load_task_data", "read_targets", "accuracy", "kendall_tau",
           "mse", "r2_score", "MODELS", "build_model", "model_names", "register_model", "TASKS", "Task",
           "classification", "regression", "get_task", "evaluate", "lr_at", "predict_split", "train", "STATNN_STATS",
           "StatNN", "fit_statnn", "statnn_feature_names", "statnn_features"]
__all__ += ["PRECISIONS", "Ranks", "dilation_targets", "editing_task", "render_siren", "delta_scales"]
