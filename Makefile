# Two commands a new user needs:  make demo  (set up .venv, install, run the demo)  and  make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/curate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(BIN)/curate

setup: $(BIN)/curate

demo: setup
	$(BIN)/curate demo --out demo-out

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf demo-out .pytest_cache
