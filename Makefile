# posefleet: `make demo` (set up + local demo), `make test` (set up + lint + types + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Assets (real models and data) live beside the checkout; never committed.
POSEFLEET_ASSETS ?= $(shell [ -d ../shared/assets ] && cd ../shared/assets && pwd)
export POSEFLEET_ASSETS

.PHONY: setup demo test lint typecheck pytest proto bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (3.10+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/posefleet demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	@rm -rf build/typecheck && mkdir -p build/typecheck/posefleet
	@for p in node coordinator clients; do cp -rs "$(CURDIR)/$$p" build/typecheck/posefleet/$$p; done
	@cp -rs "$(CURDIR)/proto/posefleet/v1" build/typecheck/posefleet/v1
	$(BIN)/mypy $$(find build/typecheck/posefleet -name '*.py' ! -name '*_pb2*.py') tests

pytest: setup
	$(BIN)/pytest

test: lint typecheck pytest

proto: setup
	$(BIN)/python proto/generate.py

bench: setup
	$(BIN)/posefleet bench --all --markdown bench/models.md --json bench/models.json --chart bench/models.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
