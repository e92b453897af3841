"""House rules of the library: importing it is cheap, and calling it leaves global state alone
(matplotlib's backend, torch's global random state)."""
from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

HEAVY = ("torch_geometric", "matplotlib", "scipy", "sklearn")


def test_import_loads_no_heavy_dependency():
    code = f"import weightspace, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves():
    import weightspace

    for name in weightspace.__all__:
        assert getattr(weightspace, name) is not None, name
    assert set(weightspace.__all__) <= set(dir(weightspace))
    assert weightspace.align.weight_matching is weightspace.weight_matching
    with pytest.raises(AttributeError):
        _ = weightspace.no_such_name
    from weightspace import WeightSpaceSpec, plot_barrier  # noqa: F401  (from-imports go through __getattr__)


@pytest.fixture
def svg_backend():
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        yield "svg"
    finally:
        matplotlib.use(before)


def test_plots_leave_the_matplotlib_backend_alone(tmp_path, svg_backend):
    import weightspace as ws
    from weightspace.models import ResidualCNN

    model = ResidualCNN()
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(0)))
    graph_png = ws.plot_graph(ws.to_graph(model.state_dict(), spec), tmp_path / "g.png")
    curve = ws.BarrierCurve(np.linspace(0, 1, 3), np.array([1.0, 2.0, 1.5]), np.array([0.9, 0.5, 0.8]), "x")
    barrier_png = ws.plot_barrier([curve], tmp_path / "b.png", title="t")
    assert matplotlib.get_backend().lower() == svg_backend
    for path in (graph_png, barrier_png):
        assert path.stat().st_size > 0 and path.read_bytes()[:4] == b"\x89PNG"


def test_model_zoo_leaves_the_global_random_state_alone(tmp_path):
    from weightspace.data import make_model_zoo

    kw = dict(num_models=2, steps=(5,), shard_size=2, progress=False, seed=1, threads=1)   # dropout 0.3 and 0.1
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    make_model_zoo(tmp_path / "a", **kw)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(456)                                  # and the zoo does not depend on it
    make_model_zoo(tmp_path / "b", **kw)
    shards = sorted((tmp_path / "a" / "shards").iterdir())
    assert shards and all(p.read_bytes() == (tmp_path / "b" / "shards" / p.name).read_bytes() for p in shards)
