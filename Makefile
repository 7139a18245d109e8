# cs-relay: the two commands of the README, and a few helpers.
#   make run    the whole pipeline locally: Kafka, mock partners, a worker, sample traffic
#   make test   the full test suite (unit and end-to-end, against a real local broker); make faults: the fault suite
#   make lint   ruff check and ruff format --check; make typecheck: mypy (both run by .ci/run
#               before make test; configured in pyproject.toml; `make format` rewrites the files)
#   make bench  the benchmark, a few minutes (not part of `make test`; docs/benchmarks.md);
#               flags through BENCH_ARGS, e.g. make bench BENCH_ARGS='--events 20000'
# Both create .venv and install the project on first use; Kafka's jars are fetched
# from Maven Central into ~/.cache/cs-relay/kafka on first use.
# Dependencies are installed at the versions pinned in constraints.txt, as the Docker
# image's are; `make constraints` rewrites it from .venv after a change to pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test faults lint format typecheck unit e2e install kafka mocks worker bench clean compose-check promtool browser constraints

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "cs-relay needs Python 3.11 or newer (found %d.%d)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

$(BENCH_STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cs-relay dev --demo

# The alert rules' tests need promtool (tests/test_monitoring.py): devtools/promtool.sh
# finds it on PATH, else installs Debian's prometheus package when root with apt-get,
# else stops here saying how to get it. The console's browser tests
# (tests/test_e2e_console.py) need chromium and chromedriver: devtools/browser.sh does
# the same with Debian's chromium and chromium-driver packages.
test: $(STAMP) promtool browser
	PROMTOOL="$$(devtools/promtool.sh)" CHROMEDRIVER="$$(devtools/browser.sh)" $(BIN)/python -m pytest -m 'not faults' --durations=30

# The fault suite (tests/test_faults_*.py, and the few long lifecycle tests elsewhere
# marked faults: a worker killed, the broker restarted or gone): partners made sick under a
# steady load against the real broker, workers killed, joining and leaving, the broker
# stalled; figures printed at the end; about 17 minutes (.ci/run runs it after make test).
# FAULTS selects scenarios, e.g. make faults FAULTS='faults and not isolation'.
FAULTS ?= faults
faults: $(STAMP)
	$(BIN)/python -m pytest -m '$(FAULTS)'

browser:
	@path=$$(devtools/browser.sh) && echo "chromedriver: $$path"

# Lint and types read the settings of [tool.ruff] and [tool.mypy] in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

promtool:
	@path=$$(devtools/promtool.sh) && echo "promtool: $$path"

unit: $(STAMP)
	$(BIN)/python -m pytest -m 'not e2e and not faults'

e2e: $(STAMP)
	$(BIN)/python -m pytest -m 'e2e and not faults'

kafka: $(STAMP)
	$(BIN)/cs-relay kafka

mocks: $(STAMP)
	$(BIN)/cs-relay mocks

worker: $(STAMP)
	$(BIN)/cs-relay worker

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

compose-check:
	docker-compose config --quiet

constraints: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip list --format=freeze --exclude-editable --exclude pip --exclude setuptools --exclude wheel; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
