# Two entry points for a newcomer (see README): `make demo` and `make test`.
# Both create .venv when missing. On a machine without an NVIDIA GPU the CPU build of
# torch is installed first, so the environment stays small.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
RUN_DIR ?= runs/sandbox

.PHONY: demo test bench venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "$(TORCH_CPU)"; fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/align run configs/sandbox.yaml --run-dir $(RUN_DIR)
	$(VENV)/bin/align eval $(RUN_DIR) --round 01-sft   # the SFT policy's answers under every judge (its violations)
	$(VENV)/bin/align report $(RUN_DIR)

test: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests

# Peer benchmarks (long: about 1.5 hours on 2 cores). Needs ../shared/data beside the checkout.
# BENCH_ARGS="--quick" for a smoke run, BENCH_ARGS="--only rm-train rl-step" for some.
bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
