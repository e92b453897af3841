"""Datasets of networks: fit INR zoos fast, generate model zoos, read published formats.

* :func:`fit_inrs` fits one SIREN per image, many at once (:mod:`.siren_batch`), and returns the
  weights (a :class:`~weightspace.WeightSpace`) with each INR's PSNR; :func:`render_inrs` draws them.
* :func:`load_images`: scikit-learn digits (embedded), MNIST / Fashion-MNIST IDX files, CIFAR-10 batches.
* :func:`generate_inr_zoo` / :func:`make_inr_zoo` (recipes) and :func:`make_model_zoo` write sharded,
  resumable zoos; :func:`load_zoo` reads them back.
* :class:`WeightDataset`, :func:`collate_weights`, :func:`normalization_stats`, :func:`split_indices`:
  torch datasets of WeightSpace samples.
* :mod:`.formats`: readers of the DWSNets / NFN / Neural Graphs INR datasets and the Small CNN Zoo.
"""
from .datasets import (Batch, NormStats, WeightDataset, Zoo, collate_weights, load_zoo, normalization_stats,
                       split_indices)
from .formats import read_dwsnets_fmnist_inrs, read_dwsnets_mnist_inrs, read_nfn_sirens, read_small_cnn_zoo
from .idx import DataFormatError, read_cifar_batch, read_idx
from .images import load_images
from .inr import INRFit, coordinate_grid, fit_inrs, psnr_from_mse, render_inrs, siren_spec
from .model_zoo import make_model_zoo
from .parallel import FitWorkers
from .recipes import RECIPES, make_inr_zoo
from .integrity import ZooStatus, check_zoo
from .shards import ShardError, ShardPart, ZooIncomplete, read_shard, write_shard, writing_part
from .zoo import generate_inr_zoo

__all__ = ["fit_inrs", "INRFit", "render_inrs", "coordinate_grid", "psnr_from_mse", "siren_spec", "FitWorkers",
           "load_images", "read_idx", "read_cifar_batch", "DataFormatError", "generate_inr_zoo", "make_inr_zoo",
           "RECIPES", "make_model_zoo", "load_zoo", "Zoo", "WeightDataset", "Batch", "collate_weights", "NormStats",
           "normalization_stats", "split_indices", "read_shard", "write_shard", "ShardError",
           "read_dwsnets_mnist_inrs", "read_dwsnets_fmnist_inrs", "read_nfn_sirens", "read_small_cnn_zoo",
           "ShardPart", "ZooIncomplete", "writing_part", "check_zoo", "ZooStatus"]
