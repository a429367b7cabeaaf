# The two commands of the README: `make serve` and `make test`. Both set up .venv first.
# `make lint` runs the static checks CI runs before the tests; `make format` fixes what
# ruff can fix and formats the tree.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
READY := $(VENV)/.installed
# `make serve PORT=3001` serves on another port.
PORT ?= 3000

.PHONY: install serve test lint format vendor-swagger-ui

$(READY): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,examples]'
	touch $@

install: $(READY)

serve: $(READY)
	$(VENV)/bin/tungsten serve examples/text_to_image -p $(PORT)

test: $(READY)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# mypy finds modules by folder, and app/, worker/ and cli/ install as tungstenkit.app,
# .worker and .cli (pyproject's package-dir): it checks a tree of links laid out as
# installed, so its messages name files as tungstenkit/app/..., tungstenkit/worker/...
TYPECHECK_TREE := build/typecheck
lint: $(READY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/tungstenkit
	ln -s $(CURDIR)/tungstenkit/* $(CURDIR)/app $(CURDIR)/worker $(CURDIR)/cli $(TYPECHECK_TREE)/tungstenkit/
	cd $(TYPECHECK_TREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache

format: $(READY)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Refresh the Swagger UI that GET /docs serves, from the npm package swagger-ui-dist.
SWAGGER_UI := app/static/vendor/swagger-ui
SWAGGER_UI_VERSION ?= $(shell cat $(SWAGGER_UI)/VERSION)
vendor-swagger-ui:
	set -e; tmp=$$(mktemp -d); (cd $$tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null && tar xzf swagger-ui-dist-*.tgz); \
	for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do cp $$tmp/package/$$f $(SWAGGER_UI)/; done; \
	rm -rf $$tmp; echo $(SWAGGER_UI_VERSION) > $(SWAGGER_UI)/VERSION; \
	cd $(SWAGGER_UI) && sha256sum swagger-ui-bundle.js swagger-ui.css > SHA256SUMS
