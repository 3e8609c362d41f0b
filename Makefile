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
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	touch $@

iverilog:
	@command -v iverilog >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's iverilog"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog) >/dev/null; \
	else \
		echo "Icarus Verilog is missing: run 'sudo apt-get install -y iverilog' (Debian/Ubuntu)" >&2; exit 1; \
	fi

demo: setup
	$(BIN)/rowstation presets
	$(BIN)/rowstation generate --preset tiny -o $(DEMO)/rtl
	$(BIN)/rowstation map --preset eyeriss-v1 --layer "N=1,C=3,H=227,W=227,M=96,R=11,S=11,U=4,P=0"
	$(BIN)/rowstation random-layer --preset eyeriss-v1 --zeros 0.4 -o $(DEMO)/conv1 \
		--layer "N=1,C=3,H=227,W=227,M=96,R=11,S=11,U=4,P=0"
	$(BIN)/rowstation run-layer --preset eyeriss-v1 --sim golden --stride 4 --shift 16 --relu \
		--ifmap $(DEMO)/conv1/ifmap.npy --weights $(DEMO)/conv1/weights.npy --bias $(DEMO)/conv1/bias.npy \
		-o $(DEMO)/conv1/ofmap.npy --report $(DEMO)/conv1/report.json
	$(BIN)/rowstation random-layer --preset tiny --zeros 0.3 -o $(DEMO)/small \
		--layer "N=2,C=4,H=10,W=10,M=6,R=3,S=3,U=1,P=1"
	$(BIN)/rowstation run-layer --preset tiny --sim verilator --padding 1 --shift 6 --relu \
		--ifmap $(DEMO)/small/ifmap.npy --weights $(DEMO)/small/weights.npy --bias $(DEMO)/small/bias.npy \
		-o $(DEMO)/small/ofmap.npy --report $(DEMO)/small/report.json

# The default selection skips tests marked slow; test-all runs everything.
test: setup
	$(BIN)/python -m pytest -n auto -q

test-all: setup
	$(BIN)/python -m pytest -n auto -q -m ''

# Benchmarks, not tests: `make bench` runs everything (about half an hour on 2 cores),
# `make bench BENCH=--quick` the model and the tiny core only.
bench: setup
	$(BIN)/rowstation bench $(BENCH) -o build/bench

clean:
	rm -rf build sim_build .pytest_cache
