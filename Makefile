# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install lock demo test coverage mutation lint typecheck check protos protos-check bench-serve bench-batch bench-watch bench-runtime bench-replicas train clean

# The exact versions of requirements.lock, then this package itself (its ranges are in pyproject).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-pin requirements.lock from pyproject.toml's ranges (keeps listed versions where they fit);
# the ray extra is in it so that `make test` and CI run the `--engine ray` tests.
lock: $(STAMP)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra ray --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock

demo: $(STAMP)
	$(PY) scripts/demo.py

# The suite on two pytest-xdist workers (about 10 min on 2 cores; docs/testing.md).
# `make test COVERAGE=1` (what CI runs) adds branch coverage of serve/ and batch/ and prints the
# modules not fully covered with their uncovered lines and branches, and the total (about
# 15 min). `make test PYTEST_ARGS="-n 0"` runs it serially, `PYTEST_ARGS="-k watch"` narrows it.
test: $(STAMP) protos-check lint typecheck
	rm -f .coverage .coverage.*
	$(PY) -m pytest -n 2 --dist loadgroup $(if $(COVERAGE),--cov --cov-report=term-missing:skip-covered) $(PYTEST_ARGS)

# The whole suite under coverage, every module listed: per-module branch coverage of serve/ and
# batch/ (generated protobuf code excluded; clfserve/clfbatch subprocesses included), the total.
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	$(PY) -m pytest --cov --cov-report=term-missing $(PYTEST_ARGS)

# Mutation score of the pure core modules ([tool.mutmut] in pyproject.toml); not part of CI.
# Prints killed / survived / "no tests" per module; `mutmut show NAME` shows one mutant.
mutation: $(STAMP)
	$(PY) -m pip install --quiet mutmut==3.8.1
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 > /dev/null
	$(VENV)/bin/mutmut results --all true | sed -E 's/^ *(.*)\.x(_|ǁ).*: (.*)$$/\1 \3/' | sort | uniq -c

lint: $(STAMP)
	$(PY) -m ruff check serve batch scripts tests
	$(PY) -m ruff format --check serve batch scripts tests

typecheck: $(STAMP)
	$(PY) -m mypy serve batch

check: lint typecheck

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

protos-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check

bench-serve: $(STAMP)
	$(PY) scripts/bench_serve.py

bench-batch: $(STAMP)
	$(PY) scripts/bench_batch.py

bench-watch: $(STAMP)
	$(PY) scripts/bench_watch.py

bench-runtime: $(STAMP)
	$(PY) scripts/bench_runtime.py

# One clfserve replica vs two behind client-side round_robin, then one killed mid-run (scaling.md)
bench-replicas: $(STAMP)
	$(PY) scripts/bench_replicas.py

# make train TASK=cifar10 [ARCH=tutorial]: one training run on the shared dataset archive
train: $(STAMP)
	$(PY) scripts/train.py --task $(TASK) $(if $(ARCH),--arch $(ARCH)) --data ../shared/datasets/$(TASK).tar.gz

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
