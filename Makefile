# Two commands for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast stop bench

install: $(STAMP)

# constraints.txt pins every Python package (regenerate: pip freeze --exclude-editable).
$(STAMP): pyproject.toml constraints.txt infra/chain/package.json infra/chain/package-lock.json
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	cd infra/chain && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: install
	$(BIN)/nft1000 demo

# Everything CI runs: lint, types, and every test tier (tests/README.md).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

# The edit loop: lint and the unit tier, in under a minute.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest tests/unit

# The ingest beside img2dataset at 0 and 50 ms gateway latency (docs/benchmarks.md).
bench: install
	$(BIN)/python -m bench.ingest

stop:
	$(BIN)/nft1000 stack down
