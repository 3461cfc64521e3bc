# einc: `make run` sets up and runs the example; `make test` sets up and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit lit setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/run.py

test: $(STAMP)
	$(BIN)/python -m pytest -q
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/lit -sv tests/filecheck

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lit: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/lit -sv tests/filecheck

# All ONNX backend node tests (`make test` runs a subset): writes
# tests/conformance/results.json and docs/onnx-coverage.md, fails on a regression.
.PHONY: conformance
conformance: $(STAMP)
	$(BIN)/python -m tests.conformance

clean:
	rm -rf $(VENV) out examples/*.onnx
