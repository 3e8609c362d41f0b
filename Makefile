# rowstation: `make demo` runs the main job, `make test` the tests. Both set up what is missing:
# a .venv with the package (editable) and its test extras, and Debian's iverilog.

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.rowstation-installed
DEMO    ?= build/demo
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup iverilog demo test test-all bench clean

setup: $(STAMP) iverilog

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,onnx,boards,analysis]'
	touch $@

iverilog:
	@command -v iverilog >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's iverilog"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog) >/dev/null; \
	else \
		echo "Icarus Verilog is missing: run 'sudo apt-get install -y iverilog' (Debian/Ubuntu)" >&2; exit 1; \
	fi

# The digits CNN (sim/models/digits_cnn.onnx) compiled and run on the simulated accelerator.
demo: setup
	$(BIN)/rowstation demo -o $(DEMO)

# The default selection skips tests marked slow; test-all runs everything.
test: setup
	$(BIN)/python -m pytest -n auto -q

test-all: setup
	$(BIN)/python -m pytest -n auto -q -m ''

# Benchmarks, not tests: `make bench` runs everything (about 5 minutes on 2 cores),
# `make bench BENCH=--quick` the model and the tiny core only.
bench: setup
	$(BIN)/rowstation bench $(BENCH) -o build/bench

clean:
	rm -rf build sim_build .pytest_cache
