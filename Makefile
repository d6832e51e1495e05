# fabnode: `make run` sets up and starts a demo node; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME := .fabnode
EXAMPLE := examples/hand-pump
FABNODE := $(BIN)/fabnode --home $(DEMO_HOME)
LISTEN ?= /ip4/0.0.0.0/tcp/4001
RUN_FLAGS ?=

.PHONY: run test test-fast bench install tools wheel clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

tools: test-tools/node_modules/.installed

test-tools/node_modules/.installed: test-tools/package.json test-tools/package-lock.json
	cd test-tools && npm ci --no-audit --no-fund
	touch $@

run: install
	@test -f $(DEMO_HOME)/config.toml || $(FABNODE) init --name "Demo Lab"
	$(FABNODE) id
	@echo "--- storing the example design $(EXAMPLE)"
	$(FABNODE) add $(EXAMPLE)
	@test -n "$$($(FABNODE) designs)" || $(FABNODE) publish $(EXAMPLE) -m "the example design, published by make run"
	@echo "--- what this node holds"
	$(FABNODE) ls
	$(FABNODE) designs
	@echo "--- the example design's files"
	$(FABNODE) ls $$($(FABNODE) add $(EXAMPLE))
	$(FABNODE) fsck
	@echo "--- starting the node (Ctrl-C stops it)"
	$(FABNODE) run --listen $(LISTEN) $(RUN_FLAGS)

# The wheel a lab would install, in a fresh virtual environment; tests/test_wheel.py runs it
# from outside the checkout.
WHEEL_VENV := build/wheel-venv
wheel: install
	rm -rf build/wheel $(WHEEL_VENV)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir build/wheel .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install --quiet --no-compile build/wheel/fabnode-*.whl

# Four workers (pytest-xdist): most tests wait on daemons and subprocesses rather than compute
# (with three, the suite took 10:50 on a clean clone once issues 16-21 added ~350 tests).
# Tests go out in collection order (tests/conftest.py puts the longest files first) and an idle
# worker steals from a busy one (--dist worksteal: 5:18 against --dist loadfile's 5:43 here,
# where one worker was left with the whole of test_network.py at the end).
PYTEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

# The wheel is built in the background while the tests run (it takes about a minute, mostly
# installing the dependencies); tests/test_wheel.py runs last and waits for build/wheel.built.
test: install tools
	mkdir -p build && rm -f build/wheel.built
	( $(MAKE) --no-print-directory wheel > build/wheel.log 2>&1 && touch build/wheel.built \
	  || { echo FAILED; cat build/wheel.log; } > build/wheel.built ) &
	FABNODE_WHEEL_VENV=$(WHEEL_VENV) FABNODE_WHEEL_BUILT=build/wheel.built $(PYTEST)

test-fast: install tools
	$(PYTEST) -m "not slow"

bench: install tools
	$(BIN)/python bench/bench_add.py

clean:
	rm -rf $(VENV) build test-tools/node_modules $(DEMO_HOME) bench/work
