VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck bench clean

$(STAMP): pyproject.toml
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m transduce.cli.demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check transduce tests benchmarks
	$(VENV)/bin/mypy transduce

bench: install
	$(PY) benchmarks/mt_train.py
	$(PY) benchmarks/mt_decode.py

clean:
	rm -rf $(VENV) build *.egg-info
