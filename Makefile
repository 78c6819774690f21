# pileprep developer entry points. `make test` and `make demo` work from a fresh clone with
# only Python 3.11+ on the machine: they create .venv and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The GPT-NeoX-20B tokenizer: the shared copy beside the repo when there is one, otherwise
# whatever the caller set, otherwise the hub id (needs network once).
SHARED_TOKENIZER := $(abspath ../shared/tokenizers/20B_tokenizer.json)
ifeq ($(origin PILEPREP_TOKENIZER), undefined)
  ifneq ($(wildcard $(SHARED_TOKENIZER)),)
    export PILEPREP_TOKENIZER := $(SHARED_TOKENIZER)
  endif
endif

# The optional torch adapter is tested when a CPU build of torch installs without CUDA
# packages: from a local wheel, such as the one CI machines keep in /opt/wheels.
TORCH_WHEEL ?= $(firstword $(wildcard /opt/wheels/torch-*+cpu-cp311-*.whl))

PYTEST_ARGS ?=
DEMO_DIR ?= demo

.PHONY: venv test test-fast demo bench bench-memory clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(if $(TORCH_WHEEL),$(BIN)/python -m pip install --quiet $(TORCH_WHEEL) || echo "torch not installed: its adapter test is skipped")
	touch $(STAMP)

# Tests keep pileprep's derived tables (Unicode classes probed from the tokenizer library) beside
# the venv, so a clean clone also exercises building them.
test: $(STAMP)
	PILEPREP_CACHE_DIR=$(abspath $(VENV))/pileprep-cache $(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (kill/resume, real clusters, walkthrough).
test-fast: $(STAMP)
	PILEPREP_CACHE_DIR=$(abspath $(VENV))/pileprep-cache $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/pileprep synth --output $(DEMO_DIR)/shards --shards 3 --megabytes 6 --seed 0
	$(BIN)/pileprep build --input $(DEMO_DIR)/shards --output $(DEMO_DIR)/out --workers 2 \
		--seq-length 2048 --batch-size 16 --train-iters 200 --overwrite
	@echo; echo "== what the model saw at step 100, and from which documents:"
	$(BIN)/pileprep batch-at $(DEMO_DIR)/out --step 100
	@echo; echo "== every step and row that trained on line 7 of shard 01:"
	$(BIN)/pileprep where $(DEMO_DIR)/out --doc 01.jsonl.zst:7

bench-memory: $(STAMP)
	$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) bench-out *.egg-info
