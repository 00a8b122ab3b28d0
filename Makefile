# One set-up path for a fresh machine: `make demo` and `make test` create .venv, install the pinned dependencies
# and toco_fast in editable mode (building the csrc/ extension), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.toco_fast_installed
# CUDA 13 keeps libcudart in lib/, not lib64/; the extension build links against it.
CUDA_HOME ?= /usr/local/cuda
export LIBRARY_PATH := $(CUDA_HOME)/lib:$(CUDA_HOME)/lib64:$(LIBRARY_PATH)

.PHONY: demo test install clean gpu-check

install: $(STAMP)

$(STAMP): setup.py requirements.txt $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m toco_fast.demo

test: $(STAMP)
	$(PY) -m pytest -q tests

# On a GPU machine with torch, triton, timm, nvcc and ninja preinstalled (no venv, no network): installs toco_fast
# for the local GPU and runs the CUDA tests, the benchmarks and a short training; report in gpu_check_out/.
gpu-check:
	$(PYTHON) -m toco_fast.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info toco_fast/*.so
