# The two commands a newcomer needs: `make lab` (the course) and `make test`.
# Each creates .venv with the project's own Python on first use and reinstalls
# only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-dev
HOST   ?= 127.0.0.1
PORT   ?= 9898
LAB_ARGS ?=

.PHONY: lab test test-matrix server bench notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

## make lab: JupyterLab on the course, opened at its first page.
# (Jupyter refuses to run as root without --allow-root: containers often are root.)
ALLOW_ROOT = $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
lab: $(STAMP)
	cd notebooks && $(abspath $(VENV))/bin/jupyter lab $(ALLOW_ROOT) $(LAB_ARGS) 00-start-here.ipynb

## make test: lint, type-check (mypy, configured in pyproject.toml), then every test (all
# backends available here).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

## make test-matrix: the package's own tests on the oldest and the newest Python that
# requires-python admits, each in its own venv (.venv-py3.10, ...) with '.[test,redis]', from
# pyenv (or pythonX.Y on PATH). Not the notebooks (nbval) nor the browser test: those are the
# course, run by make test. A Python missing here is reported as skipped, not failed.
# MATRIX_PYTEST_ARGS adds pytest options, e.g. MATRIX_PYTEST_ARGS='-m "not slow"'. The whole-
# server gradings (tests/test_grade.py, marked grading: ten minutes together) run once, in
# make test; the grader's own tests run here too.
MATRIX_PYTHONS ?= 3.10 3.13
MATRIX_PYTEST_ARGS ?= -m "not grading"
test-matrix:
	@ran=; skipped=; failed=; \
	pyenv_root=$$(pyenv root 2>/dev/null || echo "$${PYENV_ROOT:-$$HOME/.pyenv}"); \
	for v in $(MATRIX_PYTHONS); do \
	    py=$$(ls -d "$$pyenv_root"/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
	    [ -n "$$py" ] || py=$$(command -v python$$v || true); \
	    if [ -z "$$py" ]; then \
	        echo "test-matrix: SKIPPED Python $$v: not installed here" \
	             "(no $$pyenv_root/versions/$$v.*, no python$$v on PATH)"; \
	        skipped="$$skipped $$v"; continue; \
	    fi; \
	    venv=.venv-py$$v; \
	    echo "test-matrix: Python $$v ($$py) in $$venv"; start=$$(date +%s); \
	    if [ ! -f $$venv/.installed-test ] || [ pyproject.toml -nt $$venv/.installed-test ]; then \
	        "$$py" -m venv $$venv && \
	        $$venv/bin/python -m pip install --quiet --upgrade pip && \
	        $$venv/bin/python -m pip install --quiet -e '.[test,redis]' && \
	        touch $$venv/.installed-test || { failed="$$failed $$v(install)"; continue; }; \
	    fi; \
	    $$venv/bin/python -m pytest tests -p no:nbval -o addopts='-ra --strict-markers' \
	        --ignore=tests/test_lab_browser.py --ignore=tests/test_live_browser.py \
	        $(MATRIX_PYTEST_ARGS) \
	        && ran="$$ran $$v" || failed="$$failed $$v"; \
	    echo "test-matrix: Python $$v took $$(($$(date +%s) - start)) s"; \
	done; \
	echo "test-matrix: passed:$${ran:- none}; failed:$${failed:- none}; skipped:$${skipped:- none}"; \
	[ -z "$$failed" ]

## make server: the chat server in the foreground, on the best backend here (epoll on Linux,
# kqueue on macOS; BACKEND=poll picks another).
BACKEND ?= auto
server: $(STAMP)
	$(PY) -m chatlab.server --backend $(BACKEND) --host $(HOST) --port $(PORT)

## make bench: build the native load generator and C server (chatlab/bench/native, into
# ~/.cache/chatlab), then the fanout benchmark (figures, not a test).
bench: $(STAMP)
	$(PY) -m chatlab.bench.native
	$(PY) -m chatlab.bench fanout

clean:
	rm -rf $(VENV) .venv-py* .pytest_cache .ruff_cache .mypy_cache build *.egg-info

## make notebooks: re-execute every notebook and store its outputs (then commit them).
notebooks: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    notebooks/[0-9]*.ipynb notebooks/solutions/[0-9]*.ipynb
