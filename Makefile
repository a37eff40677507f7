# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean deploy-check docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# pytest processes of `make test` and `make test-fast` (pytest-xdist, a test file per process at a time):
# 2 keeps both suites within their time on a 2-core machine; TEST_WORKERS=0 runs them in one process.
# `make test` then runs the deployment on Docker (tests/deploy) alone in one process: it builds an image
# and runs a compose stack with workers of its own, keeps deadlines, and prints its timings
TEST_WORKERS ?= 2

# the checkout's own world, even where a folder above it holds another .sensorium (found like git)
demo: $(STAMP)
	SENSORIUM_HOME=$${SENSORIUM_HOME:-$(CURDIR)/.sensorium} $(BIN)/python -m cli.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(MAKE) docs
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --ignore=tests/deploy
	$(BIN)/python -m pytest -q tests/deploy

# The docs site (mkdocs.yml) into site/ (git-ignored). --strict: a broken link or anchor, or a page missing
# from the nav, fails the build; the configuration reference is generated from the code at build time.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The quick tier (under 2 minutes on 2 cores): no PostgreSQL, GPU, program from outside the venv, slow or
# soak test (the markers: pyproject.toml, applied in tests/conftest.py). `make test` runs everything.
# One OpenMP thread per pytest process (also in `make test`): on a busy 2-core machine two threads per
# process spin against each other and the tiny training tests run 5-8 times slower.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
		-m "not database and not slow and not soak and not external and not gpu"

# The deployment for real: a Docker engine (started here, installed when missing, as root), stand-in base
# images, the image built and the compose stack run through its scenario (tests/deploy/scenario.py).
# A dockerd that this target started is stopped again; the images and the build cache stay.
deploy-check: $(STAMP)
	sh tests/deploy/engine.sh
	$(BIN)/python tests/deploy/scenario.py; status=$$?; sh tests/deploy/engine.sh stop; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the embedded server is stopped first: run as root its files live outside .sensorium and are removed by
# the next start once no server uses them
clean:
	-test ! -x $(BIN)/sensorium || SENSORIUM_HOME=.sensorium DJ_HOST= $(BIN)/sensorium db stop
	rm -rf .sensorium demo-data site
