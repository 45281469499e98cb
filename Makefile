# One-stop targets. `make install` builds .venv; everything else depends on it.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
EXP     ?= fastweights_retrieval
ARGS    ?=
STAMP   := .venv/.installed

.PHONY: install test run bench clean-venv fastweights-results

install: $(STAMP)

# pip (not uv/poetry): torch/torchvision are resolved from the machine's local wheel cache.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --upgrade pip wheel setuptools
	$(PIP) install -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -x tests

run: $(STAMP)
	$(PY) run.py experiment=$(EXP) $(ARGS)

bench: $(STAMP)
	$(PY) scripts/bench_fastweights.py

fastweights-results: $(STAMP)
	$(PY) scripts/plot_fastweights.py

clean-venv:
	rm -rf .venv
