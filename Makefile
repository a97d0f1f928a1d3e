# Two commands for a new user: `make demo` and `make test`. Both build .venv once if it is missing.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

.PHONY: demo test clean-runs

$(STAMP): setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sidrec --verbose demo --run_dir $(RUN_DIR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean-runs:
	rm -rf runs/
