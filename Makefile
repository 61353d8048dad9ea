# The two commands: `make demo` and `make test`. Everything else is a step of theirs.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: prereqs install ipfs-node demo test lint docs bench up clean

$(STAMP): pyproject.toml
	@echo "Installing Roadie and its Python packages into $(VENV) (a minute or two on a fresh machine) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install $$([ -t 1 ] || echo --quiet) --python $(BIN)/python -e '.[dev]'  # uv's progress bars on a terminal
	touch $(STAMP)

install: $(STAMP)

# The local IPFS node (js-ipfs from npm) the tests, the demo and `roadie up` start; node_modules is not committed.
IPFS_NODE := tools/ipfs-node/node_modules/.installed
$(IPFS_NODE): tools/ipfs-node/package.json tools/ipfs-node/package-lock.json
	@echo "Installing the local IPFS node (js-ipfs) from npm (about two minutes on a fresh machine) ..."
	bash tools/ipfs-node/ipfs-node.sh install

ipfs-node: $(IPFS_NODE)

# What the demo needs from the machine, checked with the system python3 before anything is installed.
prereqs:
	@$(PYTHON) -m roadie.prereqs

demo: prereqs install ipfs-node
	$(BIN)/roadie demo

up: prereqs install ipfs-node
	$(BIN)/roadie up

test: install ipfs-node
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site (docs/, MkDocs Material) into site/; strict, so a broken link fails. The suite builds it too.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install ipfs-node
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.ipfs_pin
	$(BIN)/python -m bench.accrual
	$(BIN)/python -m bench.staking
	$(BIN)/python -m bench.transcode
	$(BIN)/python -m bench.analysis
	$(BIN)/python -m bench.webhooks
	$(BIN)/python -m bench.retention

clean:
	rm -rf $(VENV) site .roadie .pytest_cache .mypy_cache .ruff_cache
