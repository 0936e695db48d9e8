# Two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit bench schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every curated mutant (mutants/catalog.py) must be caught by its tests; not part of `test`.
.PHONY: mutants
mutants: $(STAMP)
	$(BIN)/python -m mutants.run

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/reconciler demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

schema: $(STAMP)
	$(BIN)/reconciler schema > schemas/reconciler.schema.json
	$(BIN)/reconciler schema --plan > schemas/plan.schema.json
	$(BIN)/reconciler schema --apply > schemas/apply.schema.json
	$(BIN)/reconciler schema --error > schemas/error.schema.json

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
