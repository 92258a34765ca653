# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: setup demo test lint ui teachers data bench llama-cpp

setup: $(VENV)/.installed

# torch first, pinned: pip then takes the CPU wheel on a CPU machine instead of
# resolving an unpinned `torch` to a multi-GB CUDA build.
# dagster-k8s and dagster-postgres 0.29.28 (the match of dagster 1.13.28) are not on PyPI yet and
# 0.29.27 pins dagster==1.13.27 exactly, so they go in without their pins; their own
# dependencies come from the [deploy] extra.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e '.[deploy]' && $(PY) -m pip install -q --no-deps dagster-k8s==0.29.27 dagster-postgres==0.29.27
	mkdir -p $(DAGSTER_HOME) && ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	touch $@

# llama.cpp's OpenAI-compatible server (the [llama-cpp] extra), to serve a GGUF teacher on loopback:
# pip builds it from source, 5-11 minutes on 2 cores. See docs/servers.md.
llama-cpp: $(VENV)/.llama-cpp

$(VENV)/.llama-cpp: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[llama-cpp]'
	touch $@

demo: setup  ## the whole pipeline on the embedded demo, headless
	$(PY) -m distill_assets.run

test: setup  ## the test suite
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

ui: setup  ## the Dagster UI on http://127.0.0.1:3000
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

data: setup  ## regenerate the demo's curated inputs (fixed seed)
	$(PY) -m distill_assets.demo.make_data

teachers: setup  ## retrain the demo's tiny teachers (about 30 minutes on 2 cores)
	$(PY) -m distill_assets.demo.train_teachers

# Every benchmark in bench/ (tests/test_bench.py checks that none is left out), at sizes that keep
# the target to 10-30 minutes on a 2-core CPU (more when other jobs share the cores); bench/README.md
# gives the sizes of its figures.
# Without a GPU and vLLM, bench.vllm_vs_transformers prints why it skipped and exits 0; without
# llama.cpp's server (`make llama-cpp`), so does bench.llama_server.
bench: setup  ## every benchmark, each printing its ratios (see bench/README.md)
	$(PY) -m bench.batched_vs_loop
	$(PY) -m bench.http_concurrency
	$(PY) -m bench.cache_rerun
	$(PY) -m bench.replica_scaling
	$(PY) -m bench.ddp_training
	$(PY) -m bench.storage_per_token
	$(PY) -m bench.scaling_estimate
	$(PY) -m bench.vllm_vs_transformers
	$(PY) -m bench.llama_server
	$(PY) -m bench.teacher_change --train 120 --eval 20 --steps 20 --dev 20
	$(PY) -m bench.orchestration_overhead --train 120 --eval 20 --steps 20 --dev 20
	spec=$$($(PY) -m distill_assets.demo.shrunken $$(mktemp -d) --train 1000 --eval 100 --steps 800 --dev 50) && \
	$(PY) -m bench.curation_effect --spec $$spec && \
	$(PY) -m bench.methods_seeds --spec $$spec --seeds 0 1 --workers 2
