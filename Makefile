# Two commands for a new user (see README.md):
#   make demo   set up .venv (if needed) and run the default end-to-end job (`landscape reproduce`)
#   make test   set up .venv (if needed) and run the test suite
# torch is pinned in the same pip call as everything that depends on it (a CPU build here, the CUDA build on a GPU machine).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo
PYTEST_ARGS ?=
# threads of torch and BLAS for the tests (the suite passes with 1 and 2: make test THREADS=2)
THREADS ?= 1

.PHONY: demo test install install-test data lint bench clean notebooks

PIP := $(PY) -m pip install -q --disable-pip-version-check --no-compile

# the package and its dependencies, without pip's byte-compilation of every installed module
# (two thirds of the install's time: 77 -> 29 s here); Python compiles what a run imports
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.0" -e .
	touch $@

# the test tools, then every module compiled once on all cores (the suite starts many
# processes); files written for newer Pythons do not compile and are skipped, as pip does
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) "torch==2.13.0" -e ".[test]"
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

data: install
	$(VENV)/bin/landscape data fetch

demo: install
	$(VENV)/bin/landscape reproduce --out $(OUT)

test: install-test data
	# one thread (torch and OpenBLAS read OMP_NUM_THREADS): the tests are small and extra
	# threads only contend (3.3 min here)
	OMP_NUM_THREADS=$(THREADS) MPLBACKEND=Agg $(PY) -m pytest -q $(PYTEST_ARGS)

# the notebooks stored with their outputs, executed from the project's own run (the Table 2
# run: landscape reproduce --full --algorithm erm irm vrex fishr --out runs/table2)
LANDSCAPE_RUN ?= runs/table2/run

notebooks: install-test data
	LANDSCAPE_RUN="$(LANDSCAPE_RUN)" $(PY) notebooks/_make.py --execute

lint: install-test
	$(PY) -m ruff check landscape tests benchmarks train_fishr.py
	$(PY) -m ruff format --check landscape tests benchmarks train_fishr.py

clean:
	rm -rf $(VENV) .pytest_cache runs
