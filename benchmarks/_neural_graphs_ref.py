"""The neural-graphs repository's own NG-GNN, timed the way ``bench_gmn.py`` times ours.

Runs in the benchmark environment (``.bench-venv``, with ``hydra-core`` and
``random-fourier-features-pytorch``, which the repository imports), never in weightspace's own.
The repository (https://github.com/mkofinas/neural-graphs) is not installed: pass the folder that
holds a checkout (``nn/``, ``experiments/``). Its MNIST-INR NG-GNN configuration is read from its own
YAML (``experiments/inr_classification/configs/model/pna.yaml``, ``data/mnist.yaml``) with the
options of its ``scripts/mnist_cls_pna.sh`` that exist in that config (reversed edge features,
positional embeddings, dropout 0.2), and it is fed SIREN 2-32-32-1 weights in its own batch format
(``weights[i]: [B, in, out, 1]``, ``biases[i]: [B, out, 1]``).

    python benchmarks/_neural_graphs_ref.py REPO '{"batch": 256, "threads": 2, "repeats": 2}'

prints one JSON line: nets/s of forward + backward (cross-entropy on 10 random classes), nets per
CPU-second, and peak RSS above the resident memory after setup, as ``bench_gmn.measure`` reports for
ours.
"""
from __future__ import annotations

import json
import sys
import types


def main(repo: str, cfg: dict) -> dict:
    sys.path.insert(0, repo)
    # `rff` (Gaussian Fourier features) imports torchvision for a data loader the model never uses;
    # the torchvision wheel here cannot load its compiled ops, so an empty module stands in for it.
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    # The repository imports `torch_geometric.utils.trim_to_layer`, which PyG 2.5 renamed to a private
    # module with the same content; alias the old name rather than pin an old PyG here.
    import torch_geometric.utils._trim_to_layer as trim
    sys.modules.setdefault("torch_geometric.utils.trim_to_layer", trim)
    import hydra
    import torch
    from omegaconf import OmegaConf

    from bench_gmn import measure

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    base = f"{repo}/experiments/inr_classification/configs"
    conf = OmegaConf.create({"model": OmegaConf.load(f"{base}/model/pna.yaml"),
                             "data": OmegaConf.load(f"{base}/data/mnist.yaml")})
    conf.model.rev_edge_features = True                 # scripts/mnist_cls_pna.sh
    conf.model.graph_constructor.use_pos_embed = True
    conf.model.graph_constructor.num_probe_features = 0
    conf.model.gnn_backbone.dropout = 0.2
    model_cfg = OmegaConf.to_container(conf, resolve=True)["model"]
    layout = [2, 32, 32, 1]
    model = hydra.utils.instantiate(model_cfg, layer_layout=layout, _recursive_=False)
    b = cfg["batch"]
    gen = torch.Generator().manual_seed(0)
    weights = tuple(torch.randn(b, i, o, 1, generator=gen) * 0.1 for i, o in zip(layout[:-1], layout[1:]))
    biases = tuple(torch.randn(b, o, 1, generator=gen) * 0.1 for o in layout[1:])
    labels = torch.randint(0, 10, (b,), generator=gen)
    model.train()

    def step():
        out = model((weights, biases))
        torch.nn.functional.cross_entropy(out, labels).backward()

    return measure(step, model, b, cfg["repeats"])


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
