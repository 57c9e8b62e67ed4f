# smearscan developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned and installed first: a bare `torch` requirement would pull several GB of CUDA wheels.
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out

.PHONY: install demo test test-slow test-gpu lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/smearscan process sample_slides --out $(DEMO_OUT)/report.xlsx

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

test-gpu: install
	$(PY) -m pytest -m gpu

lint: install
	$(VENV)/bin/ruff check smearscan tests benchmarks
	$(VENV)/bin/mypy smearscan

bench: install
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/classical_dice.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache .mypy_cache
