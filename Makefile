# Two commands for a newcomer:  `make demo` (set up + main job)  and  `make test` (set up + tests).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test doctest arch setup lint bench clean

setup: $(STAMP)

# Create the virtual environment with a Python >= 3.12 (pyenv's .python-version, python3.12, python3.13, python3).
$(PY):
	@py=$$(.ci/find-python) || exit 1; \
	echo "creating $(VENV) with $$py"; \
	$$py -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/invprob demo --out demo_output --force

# tests/ and examples/ (pyproject testpaths). That includes every docstring example of invprob/
# (tests/test_doctests.py, the same as `pytest --doctest-modules invprob`) and the layout guards
# (tests/test_architecture.py: function length, no numerics in apps/, public names only, layered imports).
test: $(STAMP)
	$(PY) -m pytest -q -x --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected"; exit 1; fi; exit $$rc

# Only the docstring examples, or only the architecture guards.
doctest: $(STAMP)
	$(PY) -m pytest -q tests/test_doctests.py

arch: $(STAMP)
	$(PY) -m pytest -q tests/test_architecture.py

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/deblur_samplers.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
