# The two commands a newcomer needs: `make run` starts the exchange, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test production matchers

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e clients/python
	touch $(STAMP)

# The engine compiled by mypyc (trading.engine_impl runs it); without a C compiler, or if mypyc refuses
# the source, a warning and the pure engine. Tried once per engine source and install, whatever the outcome
# (run bin/build-engine again once a compiler is installed).
ENGINE_BUILD := $(VENV)/.engine-build-tried
$(ENGINE_BUILD): trading/engine/__init__.py $(STAMP)
	-$(BIN)/python bin/build-engine
	touch $@

# Embedded default: SQLite, in-memory channel layer, in-process matcher, Daphne on $HOST:$PORT (127.0.0.1:8000);
# the sandbox (demo key, simulated traders) unless EXCHANGE_ENVIRONMENT=production.
run: $(STAMP) $(ENGINE_BUILD)
	PATH="$(CURDIR)/$(BIN):$$PATH" bin/run-local

test: $(STAMP) $(ENGINE_BUILD)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Production topology under supervisord against PostgreSQL and Redis (DATABASE_URL, REDIS_URL, SECRET_KEY
# must be set); `bin/supervise stop` (or Ctrl-C) stops it all.
production: $(STAMP) $(ENGINE_BUILD)
	PATH="$(CURDIR)/$(BIN):$$PATH" bin/run-production
