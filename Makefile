# Two commands for a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: on this project's machines 2.13.0 is a CPU build on local disk (on PyPI, Linux's is a CUDA
	# build of several GB); any torch>=2.1 works, CUDA builds included
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.1"
	$(PY) -m pip install -q -e ".[dev,pose]"
	# offline pose model (see the pose extra in pyproject.toml for why --no-deps); its wheels stop at
	# Python 3.12: on a newer Python the pose annotator says what to do, and its tests are skipped
	$(PY) -m pip install -q --no-deps "mediapipe==0.10.21" || echo "note: mediapipe 0.10.21 (the offline pose model) has no wheel for this Python (it has for 3.9-3.12): the pose annotator is left out"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flickerless demo --out out
	$(VENV)/bin/flickerless demo --engine --frames 16 --out out

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/deflicker.py

clean:
	rm -rf $(VENV) out .pytest_cache
