# The README's two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# torch 2.13.0 (CPU build) is on local disk here; a bare `torch` would fetch a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test docs install install-test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/vaelab train --data digits --out runs/demo --epochs 200 --batch-size 64 \
		--latent-dim 8 --seed 0 --force
	$(VENV)/bin/vaelab evaluate runs/demo --force
	@echo "pictures: runs/demo/samples.png runs/demo/reconstructions.png; metrics: runs/demo/metrics.jsonl runs/demo/evaluate.json"

test: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site
	$(PY) -m pytest

docs: install-test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site
	@echo "docs: build/site/index.html"

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
