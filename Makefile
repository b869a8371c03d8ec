# Every target builds .venv from pyproject.toml first if it is missing or stale.
PY := .venv/bin/python
ARGS ?=

.PHONY: test test-all two_moons clean-venv

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: .venv/.installed

test: .venv/.installed
	$(PY) -m pytest -q -m "not slow" -n 2

test-all: .venv/.installed
	$(PY) -m pytest -q -n 2

two_moons: .venv/.installed
	$(PY) -m experiments.two_moons $(ARGS)

clean-venv:
	rm -rf .venv
