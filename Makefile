# Two commands do all set-up on a fresh machine (see README):
#   make verify   build every spec, verify every backend against its reference, print the table
#   make test     the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup build verify test bench fuzz clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps timm
	touch $(STAMP)

setup: $(STAMP)

build: $(STAMP)
	$(VENV)/bin/optdsl build

verify: build
	TRITON_INTERPRET=1 $(VENV)/bin/optdsl verify

test: $(STAMP)
	$(VENV)/bin/optdsl build --check
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 --dist worksteal

bench: $(STAMP)
	$(VENV)/bin/optdsl bench

fuzz: $(STAMP)
	TRITON_INTERPRET=1 $(VENV)/bin/optdsl fuzz --count 5000

clean:
	rm -rf $(VENV) build dist *.egg-info
