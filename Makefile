# The README's first two commands: `make demo` and `make test`.
# Both create .venv (Python 3.11), install the package with pinned dependencies, then run.
# `make test` is the fast tier (tests not marked slow, about 10 minutes on 2 cores); `make check`
# runs every test, the full test-set evaluations included (what CI runs, .ci/run).
PYTHON ?= python3.11
VENV := .venv
# The readers apps and hubs use, in a venv of their own (requirements-clients.lock says why).
CLIENTS := .venv-clients
PY := $(VENV)/bin/python
SHARED ?= ../shared
# Test processes (pytest-xdist): one per core of the 2-core machines the suite is sized for;
# --dist loadgroup keeps the tests of one model's full-test-set work on one worker (conftest's
# `same_worker`), so that work is done once.
TEST_WORKERS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test check bench data clean

$(VENV)/.installed: setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[all,test]'
	touch $@

# oneDNN on unless the caller says TF_ENABLE_ONEDNN_OPTS=0: TensorFlow leaves it off on CPUs
# without AVX-512, where 14-LruNet-1x then runs ~2.8x slower (README, "Benchmarks").
demo: $(VENV)/.installed
	TF_ENABLE_ONEDNN_OPTS=$${TF_ENABLE_ONEDNN_OPTS:-1} $(PY) -m lru_keras.demo

# Import ../shared/data into TFDS's prepared format (offline), into the data directory that
# every entry point reads by default (README, "Datasets, offline"); skipped when it was prepared
# from the same files. The tests need it: without ../shared/data this fails, unless
# LRU_KERAS_ALLOW_NO_SHARED=1 (then the tests that need it skip, each saying why).
data: $(VENV)/.installed
	@if [ -d $(SHARED)/data ]; then $(VENV)/bin/lru-keras data import --from-shared $(SHARED)/data; \
	elif [ "$${LRU_KERAS_ALLOW_NO_SHARED:-0}" = 1 ]; then echo "no $(SHARED)/data: not importing"; \
	else echo "no $(SHARED)/data: the tests need the shared folder beside the repository" \
	     "(or LRU_KERAS_ALLOW_NO_SHARED=1)" >&2; exit 2; fi

test: $(VENV)/.installed $(CLIENTS)/.installed data
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow" -ra --durations=20 tests

# The clients apps use, in their own venv (requirements-clients.lock says why): the tests read
# exported files' standard metadata and classify with them through MediaPipe Tasks.
$(CLIENTS)/.installed: requirements-clients.lock
	$(PYTHON) -m venv $(CLIENTS)
	$(CLIENTS)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS)/bin/python -m pip install --quiet -r requirements-clients.lock
	touch $@

# The JAX and torch backends, for the full tier's layer tests under every backend.
$(VENV)/.backends: $(VENV)/.installed
	$(PY) -m pip install --quiet -c requirements.lock -e '.[all,test,backends]'
	touch $@

check: $(VENV)/.installed $(VENV)/.backends $(CLIENTS)/.installed data
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -ra --durations=40 tests

bench: $(VENV)/.installed
	$(PY) bench/keras_throughput.py

clean:
	rm -rf $(VENV) $(CLIENTS) build *.egg-info
