# The README's commands, so humans and CI run the same thing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install install-cnn quickstart test format sample-set label-demo clean

install: $(VENV)/.installed

# --compile-bytecode writes every installed module's .pyc now, and compileall those of the editable
# sources: where Python cannot write __pycache__ (read-only installs, containers, PYTHONDONTWRITEBYTECODE)
# every command would otherwise compile mlflow, pandas & co. from source again (benchmarks/startup.py).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev]'
	$(BIN)/python -m compileall -q evaluator lambda_handler/*.py
	touch $@

## The main job: validate, estimate, then sweep the flagship experiment on the bundled sample set.
quickstart: install
	$(BIN)/promptgrade sweep experiments/quickstart.yaml

# The CNN baseline needs PyTorch. PyPI's Linux wheels are multi-GB CUDA builds; this workplace keeps a
# CPU wheel in /opt/wheels, which is used when present. Elsewhere, the cnn tests skip (the extra is optional).
install-cnn: install
	@if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then \
		$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode "torch==2.13.0+cpu" --find-links /opt/wheels; \
	else echo "no CPU torch wheel on this machine: the cnn baseline is skipped (pip install 'promptgrade[cnn]')"; fi

# Two pytest workers per core: part of the suite's wall time is waiting (servers starting, a lost store
# retried, batch jobs polled), which a second worker per core fills. Measured on 2 cores: 797 s with 2
# workers, 735 s with 4 (session 29's machine); 373 s with 3, 368 s with 4 (session 30's, a faster one;
# docs/internals/testing.md). --no-loadscope-reorder keeps tests/conftest.py's longest-first order.
TEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc 2>/dev/null || echo 1) )))

## Lint, format check, types and the whole test suite (what .ci/run runs).
# mypy runs beside the suite, its report printed after it: the suite leaves about a tenth of the two cores
# idle (servers starting, stores retried), which absorbs most of mypy's ~20 s on a clean clone. Either
# failing fails the target (the suite's exit code first).
test: install-cnn
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@types=$$(mktemp); $(BIN)/mypy >"$$types" 2>&1 & mypy=$$!; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; tests=$$?; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat "$$types"; rm -f "$$types"; \
	if [ $$tests -ne 0 ]; then exit $$tests; fi; exit $$typed

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sample-set: install
	$(BIN)/python scripts/make_sample_set.py --out data/sample

## The labelling walk-through's data (README, "Growing the ground truth"): data/label_demo/.
label-demo: install
	$(BIN)/python scripts/label_demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
