# The README's commands, so humans and CI run the same thing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install quickstart test lint format sample-set clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $@

## The main job: validate, estimate, then sweep the flagship experiment on the bundled sample set.
quickstart: install
	$(BIN)/promptgrade sweep experiments/quickstart.yaml

## Lint, format check and the whole test suite (what .ci/run runs).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sample-set: install
	$(BIN)/python scripts/make_sample_set.py --out data/sample

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
