# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

# The virtual environment is rebuilt when the project's requirements change.
# A failed install removes it, so the next run starts clean.
$(VENV): pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' || { rm -rf $(VENV); exit 1; }
	touch $(VENV)

demo: $(VENV)
	$(BIN)/secateurs demo -o secateurs-out

test: $(VENV)
	$(BIN)/python -m pytest -q -n 2

bench: $(VENV)
	$(BIN)/python benchmarks/global_magnitude.py

clean:
	rm -rf $(VENV) secateurs-out .pytest_cache .hypothesis
