"""Reference architectures used by demos, benchmarks, tests and model zoos."""
from .cnn import VGG, SmallCNN
from .mlp import mlp
from .residual import ResidualCNN
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet20, resnet_bottleneck
from .siren import SIREN
from .transformer import TinyTransformer
from .trees import SoftTreeEnsemble

__all__ = ["mlp", "SIREN", "VGG", "SmallCNN", "ResNet", "BasicBlock", "Bottleneck", "resnet20", "resnet18",
           "resnet_bottleneck", "TinyTransformer", "ResidualCNN", "SoftTreeEnsemble"]
