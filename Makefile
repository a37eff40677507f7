# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean deploy-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

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
	rm -rf .sensorium demo-data
