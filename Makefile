# `make demo`: install, make a demo dataset if Dataset/ is empty, train, label Dataset/Predict.
# `make test`: install, lint, run the test suite (CI runs exactly this).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: $(VENV)/installed
	$(PY) -m imgclf.demo Dataset
	$(PY) train_cnn.py
	$(PY) predict.py

lint: $(VENV)/installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

bench: $(VENV)/installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) models/* predictions*.csv predictions_* .pytest_cache
