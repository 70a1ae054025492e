# `make demo`: install, make a demo dataset if Dataset/ is empty, train, label Dataset/Predict.
# `make test`: install, lint, run the test suite (CI runs exactly this).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-long bench-recipes clean

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

# Benchmarks on ../shared/datasets/cats_dogs (about an hour on 2 cores); results in bench/RESULTS.md.
bench: $(VENV)/installed
	$(PY) bench/train_throughput.py
	$(PY) bench/accuracy.py --setting default --setting 20-per-class --setting 100-per-class
	$(PY) bench/predict_throughput.py
	$(PY) bench/predict_throughput.py --classic --large
	$(PY) bench/predict_throughput.py --library 100000
	$(PY) bench/imbalance.py
	$(PY) bench/imbalance.py --grayscale --per-class 500
	$(PY) bench/memory.py
	$(PY) bench/report_cost.py
	$(PY) bench/devices.py
	$(PY) bench/precision.py

# The recipes on public datasets unlike ImageNet and on the shared photos (about two hours on 2 cores).
bench-recipes: $(VENV)/installed
	$(PY) bench/datasets.py
	$(PY) bench/recipes.py --dataset chest_xray --dataset sign_digits --dataset clothing
	$(PY) bench/recipes.py --dataset cats_dogs --recipe features --recipe auto
	$(PY) bench/recipes.py --dataset cats_dogs --recipe auto --budget 5

# The documented longer setting (about an hour on 2 cores).
bench-long: $(VENV)/installed
	$(PY) bench/accuracy.py --setting long

clean:
	rm -rf $(VENV) models/* predictions*.csv predictions_* .pytest_cache
