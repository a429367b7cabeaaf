# The two commands of the README: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
READY := $(VENV)/.installed

.PHONY: install serve test

$(READY): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,examples]'
	touch $@

install: $(READY)

serve: $(READY)
	$(VENV)/bin/tungsten serve examples/text_to_image -p 3000

test: $(READY)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
