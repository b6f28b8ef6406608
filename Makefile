# Developer entry points. Needs only Python 3.11 (or newer) and make; everything else is
# installed into .venv on first use and again whenever pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Stamp inside the venv: the install reruns when pyproject.toml is newer than it.
INSTALLED := $(VENV)/.installed
# Extra pip options, e.g. PIP_ARGS="--extra-index-url <a CPU-only torch index>" on a machine
# without a GPU, where PyPI's Linux torch wheel brings gigabytes of CUDA libraries.
PIP_ARGS ?=
OUT ?= out

.DEFAULT_GOAL := help
.PHONY: help run example bench test lint format

help:
	@echo "make run     the whole stack here: Redis, API, worker(s), dashboard at http://127.0.0.1:8501 (Ctrl-C stops it)"
	@echo "make example compute an example SPP (NF-ResNetV2-600) with the CLI into $(OUT)/"
	@echo "make test    lint, check formatting, run the test suite (installs chromium with apt when missing)"
	@echo "make bench   all benchmarks, one table of figures and targets (docs/benchmarks.md)"
	@echo "make lint    ruff check, ruff format --check and the import layers (lint-imports)"
	@echo "make format  apply ruff fixes and formatting"

# The example model plugins (examples/plugins) are installed beside the project: `make run`
# serves them, the tests use them.
$(INSTALLED): pyproject.toml examples/plugins/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_ARGS) -e ".[dev]" -e examples/plugins
	touch $@

run: $(INSTALLED)
	$(BIN)/python -m launcher

example: $(INSTALLED)
	$(BIN)/nfcore spp --depth 600 --norm nf --conv ws --width 0.25 --resolution 128 --batch 8 \
		--out $(OUT)/spp.json --csv $(OUT)/spp.csv --plot $(OUT)/spp.html --plot $(OUT)/spp.png
	@echo "SPP written to $(OUT)/spp.json, $(OUT)/spp.csv, $(OUT)/spp.html and $(OUT)/spp.png"

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Browser tests drive Debian's chromium; install it once when it is missing (root or sudo).
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "the browser tests need Debian's chromium package: apt-get install chromium"; exit 1; fi; \
	$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
