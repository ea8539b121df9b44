# Two commands a new user needs: `make run` and `make test`. Each creates
# the virtual environment and installs into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test check bench clean

# `make run` installs what running needs; `make test` adds the test tools.
$(BIN)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed: pyproject.toml $(BIN)/.installed-run
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed-run
	$(BIN)/fastworker run control --tasks examples.tasks

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(BIN)/.installed
	$(BIN)/python -m mypy actors fastworker dashboard

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/dispatch.py

clean:
	rm -rf $(VENV) build *.egg-info
