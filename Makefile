# Quick start:  make demo   (set up .venv, train on the embedded data set, print mAP, save a picture)
#               make test   (set up .venv with the test extras, run the whole suite)
# python3.11 where there is one, else python3 (as README says); `make PYTHON=python3.12 demo` to choose.
PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup setup-test demo test bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

demo: setup
	$(PY) -m ssd_keras demo --out out/demo

test: setup-test
	$(PY) -m pytest -n 2 -q tests

bench: setup-test
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) out
