# Newcomer commands: `make test` (the test suite) and `make demo` (the main job).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test demo bench clean

$(BIN)/jaxalm: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/jaxalm

venv: $(BIN)/jaxalm

test: venv
	$(BIN)/python -m pytest tests

demo: venv
	$(BIN)/jaxalm demo

clean:
	rm -rf $(VENV) *.egg-info
