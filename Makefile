# The README's two commands are `make run` and `make test`; both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test files run in parallel workers: each test has its own schema and topic prefix (tests/conftest.py),
# and most of a test's time is spent waiting on Kafka, PostgreSQL and the processes it starts.
# TEST_WORKERS=1 runs one file at a time.
TEST_WORKERS ?= 3

.PHONY: install run test test-cluster lint bench stack-up stack-down clean

# The native Avro reader and writer (and the Kafka key hash, the binary COPY encoder) are compiled at install: a change
# to them (or to setup.py) reinstalls.
$(STAMP): pyproject.toml setup.py schemas/_native_reader.pyx schemas/_native_writer.pyx engine/_native_kafka.pyx \
		engine/_pg_copy.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ledgerflow run

test: $(STAMP)
	$(BIN)/ledgerflow stack up
	$(BIN)/ledgerflow topics ensure
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=25 \
	  -m 'not cluster and not serial' $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m serial $(PYTEST_ARGS)

# Not part of `make test`: starts a three-broker cluster of its own and kills one broker (~2-3 min).
test-cluster: $(STAMP)
	$(BIN)/ledgerflow stack up
	$(BIN)/python -m pytest -q -p no:cacheprovider -m cluster tests/integration/test_cluster.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || echo "wrk not installed: the API stage falls back to a Python client"
	$(BIN)/ledgerflow stack up
	$(BIN)/python -m bench $(BENCH_ARGS)

stack-up: $(STAMP)
	$(BIN)/ledgerflow stack up

stack-down: $(STAMP)
	$(BIN)/ledgerflow stack down

clean:
	rm -rf $(VENV) build *.egg-info schemas/_native_*.c schemas/_native_*.so engine/_native_*.c engine/_native_*.so engine/_pg_copy.c engine/_pg_copy*.so
