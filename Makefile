# Set-up on a fresh Linux machine: `make demo` (the viewer on the demo study) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed


.PHONY: demo test test-training lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lunglens demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest

# the minutes-long training checks that `make test` leaves out
test-training: $(STAMP)
	$(BIN)/python -m pytest -m training

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.bench_loading

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
