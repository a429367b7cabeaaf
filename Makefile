# The two commands of the README: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
READY := $(VENV)/.installed
# `make serve PORT=3001` serves on another port.
PORT ?= 3000

.PHONY: install serve test vendor-swagger-ui

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

# Refresh the Swagger UI that GET /docs serves, from the npm package swagger-ui-dist.
SWAGGER_UI := app/static/vendor/swagger-ui
SWAGGER_UI_VERSION ?= $(shell cat $(SWAGGER_UI)/VERSION)
vendor-swagger-ui:
	set -e; tmp=$$(mktemp -d); (cd $$tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null && tar xzf swagger-ui-dist-*.tgz); \
	for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do cp $$tmp/package/$$f $(SWAGGER_UI)/; done; \
	rm -rf $$tmp; echo $(SWAGGER_UI_VERSION) > $(SWAGGER_UI)/VERSION; \
	cd $(SWAGGER_UI) && sha256sum swagger-ui-bundle.js swagger-ui.css > SHA256SUMS
