# Everything runs inside a project virtual environment (.venv), created on first use.
# Extra Hydra overrides go in ARGS, e.g. make train EXP=digits_mrl_e ARGS="trainer.max_epochs=3"

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# uv installs into .venv (the interpreter it was created with), never downloads a Python of its own
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
EXP ?= digits_mrl
SWEEP ?= heads
RUN ?=
DIR ?=
INPUT ?=
DB ?=
QUERIES ?=
SRC ?=
OUT ?=
ARGS ?=
OUTPUTS ?= outputs
# the newest of some run directories: they are named <experiment>/<date>_<time>, so the names sort by time
newest = $(shell ls -d $(1) 2>/dev/null | awk -F/ '{print $$(NF-1), $$0}' | sort | tail -n 1 | cut -d' ' -f2)
EVAL_RUN = $(or $(RUN),$(if $(findstring ckpt=,$(ARGS)),,$(call newest,$(OUTPUTS)/train/*/*/ $(OUTPUTS)/multirun/*/*/)))
EMBED_RUN = $(or $(RUN),$(call newest,$(OUTPUTS)/train/*/*/))
REPORT_DIR = $(or $(DIR),$(call newest,$(OUTPUTS)/multirun/*/*/),$(OUTPUTS))
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true

.PHONY: help install uv lock upgrade train sweep eval report dashboard embed mine search index export prepare test test-full test-slow test-slurm lint format bench bench-heads bench-retrieval bench-data bench-text bench-mine clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The repository's environment is the lock (uv.lock: every extra, torch included, with hashes). pip bootstraps
# uv at the version the lock itself pins (UV_VERSION, checked by tests/test_lock.py); uv then installs exactly
# the locked set and refuses a lock that no longer matches pyproject.toml (--locked).
$(STAMP): pyproject.toml uv.lock | uv
	$(UV_ENV) $(UV) sync --locked --all-extras
	touch $(STAMP)

# the venv and uv alone: `make lock` needs them while pyproject.toml and uv.lock disagree (sync would refuse)
uv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) && [[ "$$($(UV) --version)" == "uv $(UV_VERSION)"* ]] || $(PY) -m pip install --quiet "uv==$(UV_VERSION)"

install: $(STAMP) ## create .venv and install the locked set (uv.lock: the project, every extra, torch)

lock: uv ## re-resolve uv.lock after editing pyproject.toml (keeps every locked version that still fits)
	$(UV_ENV) $(UV) lock
	$(UV_ENV) $(UV) sync --locked --all-extras

upgrade: $(STAMP) ## move the lock to the newest releases, install them and run every test (commit uv.lock if green)
	$(UV_ENV) $(UV) lock --upgrade
	$(UV_ENV) $(UV) sync --locked --all-extras
	$(MAKE) --no-print-directory test-full

train: $(STAMP) ## train one experiment: make train EXP=digits_mrl ARGS="..."
	$(PY) -m mrl.cli.train experiment=$(EXP) $(ARGS)

sweep: $(STAMP) ## Hydra multirun: make sweep EXP=digits_mrl SWEEP=heads
	$(PY) -m mrl.cli.train --multirun experiment=$(EXP) sweep=$(SWEEP) $(ARGS)

eval: $(STAMP) ## evaluate a run, or every run of a sweep (default: the newest of either): make eval RUN=...
	@test -n "$(EVAL_RUN)$(findstring ckpt=,$(ARGS))$(ckpt)" || { echo "make eval: no run under $(OUTPUTS)/train or $(OUTPUTS)/multirun yet; run make train first, or give RUN=<run or sweep directory> or ckpt=<checkpoint file>" >&2; exit 2; }
	$(PY) -m mrl.cli.evaluate $(if $(ckpt),ckpt=$(ckpt),$(if $(EVAL_RUN),run=$(EVAL_RUN))) $(ARGS)

report: $(STAMP) ## compare runs (default: the newest sweep): make report DIR=outputs/multirun/digits_mrl
	$(PY) -m mrl.cli.report $(REPORT_DIR) $(ARGS)

dashboard: $(STAMP) ## W&B workspace and report of a sweep's truncation curves (default: the newest sweep): make dashboard DIR=outputs/multirun/... [ARGS="--dry-run"]
	$(PY) -m mrl.cli.dashboard $(REPORT_DIR) $(ARGS)

embed: $(STAMP) ## embed your own images or texts (default: the newest run): make embed INPUT=<folder or file> [RUN=...] [ARGS="--dim 64"]
	@test -n "$(INPUT)" || { echo "make embed: give INPUT=<image folder or list of image paths, for an image model; .txt file or table of texts, for a text model>" >&2; exit 2; }
	@test -n "$(EMBED_RUN)" || { echo "make embed: no run under $(OUTPUTS)/train yet; run make train first, or give RUN=<run directory>" >&2; exit 2; }
	$(PY) -m mrl.cli.embed $(EMBED_RUN) $(INPUT) $(ARGS)

mine: $(STAMP) ## hard negatives for a pairs file through the prefix funnel, written as triplets (default: the stock MiniLM): make mine INPUT=pairs.jsonl [RUN=<text run>] [OUT=triplets.jsonl] [ARGS="--num-negatives 3 --relative-margin 0.05"]
	@test -n "$(INPUT)" || { echo "make mine: give INPUT=<table of anchor/positive pairs: .jsonl, .csv, .parquet>; RUN=<text run directory> mines with a trained model (default: the stock all-MiniLM-L6-v2)" >&2; exit 2; }
	$(PY) -m mrl.cli.mine $(INPUT) $(if $(RUN),--run $(RUN)) $(if $(OUT),--out $(OUT)) $(ARGS)

search: $(STAMP) ## nearest items of each query, 16-d shortlist then full-width rerank: make search DB=items.npz QUERIES=queries.npz [ARGS="--k 5" or "--target-recall 0.99"]; from make index's database: make search QUERIES=q.npz ARGS="--backend milvus --uri index.db" (or "--backend lancedb --uri index.lancedb")
	@test -n "$(QUERIES)" -a \( -n "$(DB)" -o -n "$(findstring --backend,$(ARGS))" \) || { echo "make search: give DB=<embeddings .npz of the items> QUERIES=<embeddings .npz of the queries> (make embed writes them), or QUERIES=... ARGS=\"--backend milvus|lancedb --uri <make index's database>\"" >&2; exit 2; }
	$(PY) -m mrl.cli.search $(DB) $(QUERIES) $(ARGS)

index: $(STAMP) ## load embeddings into a vector database (LanceDB folder or s3://...; ARGS="--backend milvus": Milvus Lite file or server): make index RUN=<run after make eval> or DB=items.npz [QUERIES=q.npz ARGS="--target-recall 0.99"]
	@test -n "$(DB)$(EMBED_RUN)" || { echo "make index: give DB=<embeddings .npz> or RUN=<run directory, after make eval>; no run under $(OUTPUTS)/train yet" >&2; exit 2; }
	$(PY) -m mrl.cli.index $(or $(DB),$(EMBED_RUN)) $(if $(QUERIES),--queries $(QUERIES)) $(ARGS)

export: $(STAMP) ## export a run for serving (text: sentence-transformers; images: a torch.export program): make export RUN=...
	$(PY) -m mrl.cli.export $(RUN) $(ARGS)

prepare: $(STAMP) ## image folder -> litdata shards for data=image_shards: make prepare SRC=<train/,val/ folder> OUT=<shards> [ARGS="--max-side 512 --raw-fraction 0.5"]
	@test -n "$(SRC)" -a -n "$(OUT)" || { echo "make prepare: give SRC=<image folder with train/<class>/* and val/<class>/*> OUT=<folder for the shards> (check them with ARGS=--verify)" >&2; exit 2; }
	$(PY) -m mrl.cli.prepare $(SRC) $(OUT) $(ARGS)

test: $(STAMP) ## fast tests (under ten minutes)
	$(TEST_ENV) $(PY) -m pytest -q $(ARGS)

test-full: $(STAMP) ## all tests, the slow ones too
	$(TEST_ENV) $(PY) -m pytest -q -m "slow or not slow" $(ARGS)

test-slow: $(STAMP) ## only the slow tests (fault injection in subprocesses, the wheel, the GPU check's --dry-run); CI runs them
	$(TEST_ENV) $(PY) -m pytest -q -m slow $(ARGS)

test-slurm: $(STAMP) ## tests on a local one-node SLURM (root; apt-get install slurmctld slurmd slurm-client munge); fail without it
	MRL_REQUIRE_SLURM=1 $(TEST_ENV) $(PY) -m pytest -q -m slurm $(ARGS)

lint: $(STAMP) ## ruff (style, complexity), the import contract, pyright on src/mrl, the architecture page up to date
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pyright --pythonpath $(PY) src/mrl
	$(PY) -m mrl_testing.architecture --check

format: $(STAMP) ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

bench: ## every benchmark with its defaults (ratios measured side by side)
	@test -z "$(ARGS)" || { echo "make bench: the benchmarks take different options; give ARGS to make bench-heads, bench-retrieval, bench-data, bench-text or bench-mine" >&2; exit 2; }
	@$(MAKE) --no-print-directory bench-heads bench-retrieval bench-data bench-text bench-mine

bench-heads: $(STAMP) ## nested heads against a plain classifier: make bench-heads ARGS="--threads 1 --clock thread"
	$(PY) benchmarks/heads.py $(ARGS)

bench-retrieval: $(STAMP) ## funnel against exact search: make bench-retrieval ARGS="--n 20000"
	$(PY) benchmarks/retrieval.py $(ARGS)

bench-data: $(STAMP) ## training images/s per CPU core, prepared shards against a PIL ImageFolder: make bench-data ARGS="--images DIR"
	$(PY) benchmarks/data.py $(ARGS)

bench-text: $(STAMP) ## text training pairs/s against sentence-transformers' trainer: make bench-text ARGS="--threads 1 --clock process"
	$(TEST_ENV) $(PY) benchmarks/text.py $(ARGS)

bench-mine: $(STAMP) ## hard-negative mining against sentence-transformers' mine_hard_negatives: make bench-mine ARGS="--corpus 20000"
	$(TEST_ENV) $(PY) benchmarks/mine.py $(ARGS)

clean: ## remove run outputs (keeps .venv)
	rm -rf outputs/train outputs/multirun outputs/eval
