"""Readers of published datasets of networks (the files as their authors' code reads them):

* :func:`read_dwsnets_mnist_inrs` / :func:`read_dwsnets_fmnist_inrs`: DWSNets / Neural Graphs
  MNIST-INR and Fashion-MNIST-INR;
* :func:`read_nfn_sirens`: NFN's SIREN datasets (MNIST, Fashion-MNIST, CIFAR-10);
* :func:`read_small_cnn_zoo`: the Small CNN Zoo (Unterthiner et al., 2020).

Each returns a :class:`weightspace.data.Zoo` whose ``weights`` use this library's key names
(:class:`weightspace.models.SIREN` / :class:`weightspace.models.SmallCNN`) and whose ``manifest``
records the conventions of the source (coordinate order, output offset, value range). A missing,
corrupt or truncated file raises :class:`weightspace.data.DataFormatError` naming the file.
"""
from .dwsnets import read_dwsnets_fmnist_inrs, read_dwsnets_mnist_inrs
from .nfn import read_nfn_sirens
from .small_cnn_zoo import read_small_cnn_zoo

__all__ = ["read_dwsnets_mnist_inrs", "read_dwsnets_fmnist_inrs", "read_nfn_sirens", "read_small_cnn_zoo"]
