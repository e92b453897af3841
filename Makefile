# Set-up is automatic: `make test` and `make demo` create .venv and install the package on first use.
# The CPU build of torch is pinned for the project's machines; override for yours, e.g.
#   make test TORCH_SPEC="torch==2.5.1"      or      make test TORCH_SPEC=torch
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: test lint demo bench bench-align bench-layers bench-gmn install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check weightspace tests benchmarks datasets examples

demo: $(STAMP)
	$(VENV)/bin/weightspace demo

MNIST_ROOT ?= ../shared/data/mnist
BENCH_VENV ?= .bench-venv

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_graph.py
	$(PY) benchmarks/bench_fit.py --root $(MNIST_ROOT)

# The `rebasin` and `nfn` packages are the alignment and layer benchmarks' references; they live in their own environment
# and are never dependencies of weightspace.
$(BENCH_VENV)/.installed:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" rebasin nfn -e .
	touch $@

bench-align: $(STAMP) $(BENCH_VENV)/.installed
	$(PY) benchmarks/bench_align.py --mnist $(MNIST_ROOT) --rebasin-python $(BENCH_VENV)/bin/python

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis

bench-layers: $(STAMP) $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/bench_layers.py

bench-gmn: $(STAMP)
	$(PY) benchmarks/bench_gmn.py
