# One command each: `make demo` runs the main job on the real data, `make test` runs the tests.
# Both create .venv and install what they need, the CPU build of torch first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# An unpinned torch pulls a CUDA build of several GB; on a GPU machine set TORCH_SPEC to a CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
DATA ?= ../shared/data/online-retail
TEST_FROM ?= 2011-10-01
REPORT ?= benchmarks/results/online-retail.json

DUNNHUMBY ?= ../shared/data/dunnhumby-sample
DUNNHUMBY_TEST_FROM ?= 2017-10-29

.PHONY: install test demo bench bench-dunnhumby tune clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

test: install
	$(BIN)/python -m pytest

# The main job end to end on the real data: fit the engine, recommend, search, benchmark it.
demo: install
	$(BIN)/ecomrec demo --data $(DATA) --test-from $(TEST_FROM)

# The full offline benchmark: every method (baselines, bi-encoder, hybrid, both rerankers).
bench: install
	$(BIN)/ecomrec bench --data $(DATA) --test-from $(TEST_FROM) --output $(REPORT)

# The same protocol on any shop's log: here the dunnhumby grocery sample with its full 92k-product catalog.
bench-dunnhumby: install
	$(BIN)/ecomrec bench --interactions $(DUNNHUMBY)/interactions.csv --catalog $(DUNNHUMBY)/catalog.csv \
		--columns quantity=quantity --catalog-text text --catalog-category category --test-from $(DUNNHUMBY_TEST_FROM) \
		--output benchmarks/results/dunnhumby.json

tune: install
	$(BIN)/python benchmarks/tune_baselines.py --data $(DATA) --test-from $(TEST_FROM)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
