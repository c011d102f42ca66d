# The README's commands. `make demo` sets everything up and records a real training run;
# `make test` runs the whole test suite. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here (not in pyproject) because this exact CPU build lies on the machine's
# disk; a looser spec would download a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test quick lint bundle bundle-check bench
setup: $(VENV)/.installed

# Each step says what it installs first: the whole set-up takes a few minutes on first use.
$(VENV)/.installed: pyproject.toml
	@echo "[1/4] creating the virtual environment $(VENV)..."
	python3 -m venv $(VENV)
	@echo "[2/4] upgrading pip in $(VENV)..."
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[3/4] installing $(TORCH) (CPU build, the largest package)..."
	$(PY) -m pip install --progress-bar on "$(TORCH)"
	@echo "[4/4] installing stepstore (editable) with its extras [all,dev]: pandas, pyarrow,"
	@echo "      duckdb, zarr, scikit-learn, keras, lightning, transformers, jax, mlflow, pytest, ..."
	@echo "      (about 150 packages; pip prints only problems, then a summary line below)"
	$(PY) -m pip install --quiet -e '.[all,dev]'
	@echo "set-up done: $$($(PY) -m pip list --format freeze | wc -l) packages in $(VENV)"
	touch $@

demo: setup
	@echo "running the demo: $(VENV)/bin/stepstore demo"
	$(VENV)/bin/stepstore demo

lint: setup
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m ruff format --check src tests benchmarks docs
	$(PY) -m mypy

# The dashboard's built files (src/stepstore/ui/static) are committed; `make bundle` rebuilds
# them from frontend/ and `make bundle-check` fails if they differ from what the sources build.
bundle:
	cd frontend && npm ci --no-audit --no-fund && npm run build

bundle-check:
	cd frontend && npm ci --no-audit --no-fund && npm run check

test: setup lint bundle-check
	$(PY) -m pytest -q

# The quick tier while working: everything but the tests marked slow (stress, soak, SIGKILL
# campaigns, 10M points). `make test` stays the whole suite, the one CI runs.
quick: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_scalars.py
