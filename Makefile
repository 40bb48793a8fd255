# Two commands a new user needs:  make demo  (set up .venv, install, run the demo)  and  make test
PY ?= python3
VENV := .venv
# e.g. make demo CURATE_FLAGS=-v: debug logging, and Ray's and img2dataset's own output on the terminal
CURATE_FLAGS ?=
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/curate: pyproject.toml
	@echo "make: creating $(VENV) and installing qwen-vl-curation with its test extras (pip, quietly: a few minutes the first time)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(BIN)/curate
	@echo "make: installed into $(VENV)"

setup: $(BIN)/curate

demo: setup
	@echo "make: running the demo: 240 generated images from a loopback server -> download, filters, Qwen-VL samples, report (about a minute)"
	$(BIN)/curate $(CURATE_FLAGS) demo --out demo-out

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf demo-out .pytest_cache
