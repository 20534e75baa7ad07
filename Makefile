# Two commands do all set-up on a fresh machine:
#   make bench   builds fastdw and runs the benchmark on this machine's default device
#   make test    builds fastdw and runs the test suite
# `make test-fast` runs the fast tier (no slow, subprocess or other_isa tests): tests/README.md.
# Both create .venv and install requirements.txt first (idempotent).
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv build test test-fast bench clean

$(VENV)/.requirements-installed: requirements.txt
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install "setuptools>=69" wheel
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(VENV)/.requirements-installed

# The editable install rebuilds every kernel (minutes): only when a C++/CUDA source or the
# build script changed since the last build (`make clean` forces one). Python files are live.
NATIVE_SOURCES := $(shell find csrc -type f ! -name '*.md') setup.py
$(VENV)/.fastdw-built: $(VENV)/.requirements-installed $(NATIVE_SOURCES)
	$(PY) -m pip install --no-build-isolation --use-pep517 --no-deps -e .
	touch $@

build: $(VENV)/.fastdw-built
	@$(PY) -c "import fastdw, fastdw._C as c; print('fastdw built:', sorted(fastdw.available_backends()), '| CPU kernels:', c.cpu_isa())"

test: build
	$(PY) -m pytest tests -q

test-fast: build
	$(PY) -m pytest tests -q -m "not slow and not subprocess and not other_isa"

bench: build
	$(PY) -m fastdw bench

clean:
	rm -rf build *.egg-info fastdw/_C*.so $(VENV)/.fastdw-built
