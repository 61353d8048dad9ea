# The two commands: `make demo` and `make test`. Everything else is a step of theirs.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/roadie demo

up: install
	$(BIN)/roadie up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.accrual
	$(BIN)/python -m bench.staking

clean:
	rm -rf $(VENV) .roadie .pytest_cache .mypy_cache .ruff_cache
