# Two commands for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test stop bench

install: $(STAMP)

# constraints.txt pins every Python package (regenerate: pip freeze --exclude-editable).
$(STAMP): pyproject.toml constraints.txt infra/chain/package.json infra/chain/package-lock.json
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	cd infra/chain && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: install
	$(BIN)/nft1000 demo

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.ingest

stop:
	$(BIN)/nft1000 stack down
