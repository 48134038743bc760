# The README's first two commands: `make demo` and `make test`.
# Both create .venv (Python 3.11), install the package with pinned dependencies, then run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
export TFDS_DATA_DIR ?= $(CURDIR)/.tfds
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench data clean

$(VENV)/.installed: setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

# oneDNN on unless the caller says TF_ENABLE_ONEDNN_OPTS=0: TensorFlow leaves it off on CPUs
# without AVX-512, where 14-LruNet-1x then runs ~2.8x slower (README, "Benchmarks").
demo: $(VENV)/.installed
	TF_ENABLE_ONEDNN_OPTS=$${TF_ENABLE_ONEDNN_OPTS:-1} $(PY) -m lru_keras.demo

# Import ../shared/data into TFDS's prepared format (offline), once.
data: $(VENV)/.installed
	@if [ -d $(SHARED)/data ]; then $(VENV)/bin/lru-keras data import --from-shared $(SHARED)/data; \
	else echo "no $(SHARED)/data: skipping dataset import (tests that need it will say so)"; fi

test: $(VENV)/.installed data
	$(PY) -m pytest -ra --durations=30 tests

bench: $(VENV)/.installed
	$(PY) bench/keras_throughput.py

clean:
	rm -rf $(VENV) .tfds build *.egg-info
