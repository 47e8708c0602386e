# Kairos — the front door. `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
export DJANGO_SETTINGS_MODULE ?= config.settings

.PHONY: run test test-suite test-fast stop services migrate demo bench bench-quick lint format up down chromium haproxy clean

# Python keeps compiled modules in __pycache__ (git-ignored) as it imports them. Some environments set
# PYTHONDONTWRITEBYTECODE (this machine's and CI's do): every process would then compile every module it imports
# again (Django's start 5.2 s instead of 3.1 s; the suite starts a few hundred processes: 836 s instead of 590 s).
# Unset for everything make starts, only what is imported is compiled, once: byte-compiling every installed wheel
# up front (uv's --compile-bytecode) took 20 s of a fresh clone's set-up for 11,000 files, most never imported.
unexport PYTHONDONTWRITEBYTECODE

# uv installs the locked wheels in parallel: seconds where pip took 75 s on a fresh machine. If uv cannot be had or
# fails, pip installs the same lock.
UV_VERSION := 0.13.8
.venv/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	{ $(PIP) install -q --disable-pip-version-check uv==$(UV_VERSION) && .venv/bin/uv pip install -q --python $(PY) -r requirements.lock; } \
		|| $(PIP) install -q --disable-pip-version-check -r requirements.lock
	touch $@

services: .venv/.installed
	$(PY) -m config.embedded start

migrate: services
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py redis_keys_migrate

demo: migrate
	$(PY) manage.py demo_seed --if-empty

run: demo
	trap '$(PY) -m config.embedded stop' EXIT; $(PY) -m config.runner

# Debian's chromium drives the browser tests (Playwright's own browser download does not work here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# Debian's HAProxy: tests/test_load_balancer.py runs deploy/haproxy.cfg (compose's load balancer) with it.
haproxy:
	@command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }

# Both cores: pytest-xdist workers, a file per worker at a time (module fixtures are built once), each with
# its own PostgreSQL and Redis database. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
# One OpenMP/BLAS thread per test process: the xdist workers already fill both cores, and a second thread
# in each (scikit-learn's k-means, numpy's BLAS) only waits for a core: a 1,500-person refit and
# clustering took 14-30 s with two threads per process on this machine, 6 s with one (issue 17).
TEST_ENV = DJANGO_SETTINGS_MODULE=config.settings.test OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# The whole of it timed, install and set-up included (the budget is 8 minutes on a 2-core machine).
test:
	@start=$$(date +%s); $(MAKE) --no-print-directory test-suite; code=$$?; \
		echo "make test: $$(( $$(date +%s) - start )) s wall time, install and set-up included (exit $$code)"; exit $$code

test-suite: services chromium haproxy
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# Day-to-day: everything but the real-browser tests and those marked slow (real workers killed, big imports).
test-fast: services
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not e2e and not slow" $(PYTEST_ARGS)

stop:
	-$(PY) -m config.embedded stop

bench: migrate
	$(PY) bench/ingest.py
	$(PY) bench/decide.py
	$(PY) bench/live.py
	$(PY) bench/bandit_sim.py
	$(PY) bench/lift.py
	$(PY) bench/peeking.py
	$(PY) bench/segments.py
	$(PY) bench/segment_migration.py
	$(PY) bench/soak.py
	$(PY) bench/privacy.py
	$(PY) bench/batch.py
	$(PY) bench/sdk.py
	$(PY) bench/meaning.py
	$(PY) bench/encoders.py
	$(PY) bench/partitions.py

bench-quick: migrate
	$(PY) bench/ingest.py --quick
	$(PY) bench/decide.py --quick
	$(PY) bench/live.py --quick
	$(PY) bench/bandit_sim.py --quick
	$(PY) bench/lift.py --quick
	$(PY) bench/peeking.py --quick
	$(PY) bench/segments.py --quick
	$(PY) bench/segment_migration.py --quick
	$(PY) bench/soak.py --quick
	$(PY) bench/privacy.py --quick
	$(PY) bench/batch.py --quick
	$(PY) bench/sdk.py --quick
	$(PY) bench/meaning.py --quick
	$(PY) bench/encoders.py --quick
	$(PY) bench/partitions.py --quick

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

format: .venv/.installed
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

up:
	docker compose up --build

down:
	docker compose down

clean: stop
	rm -rf var
