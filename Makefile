# One-stop targets. `make install` builds .venv; every other target depends on it.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
EXP     ?= fastweights_retrieval
ARGS    ?=
STAMP   := .venv/.installed-stamp

.PHONY: install test run bench-fastweights bench-acktr bench-lookahead results-fastweights results-acktr results-lookahead results-revrnn bench-gnf results-gnf clean-venv

install: $(STAMP)

# pip, not uv/poetry: torch==2.14.1 / torchvision==0.29.1 resolve from the machine's local wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip wheel setuptools
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

run: $(STAMP)
	$(PY) run.py experiment=$(EXP) $(ARGS)

bench-fastweights: $(STAMP)
	$(PY) scripts/bench_fastweights.py

bench-acktr: $(STAMP)
	$(PY) scripts/bench_acktr.py

bench-lookahead: $(STAMP)
	$(PY) scripts/bench_lookahead.py

results-fastweights: $(STAMP)
	$(PY) scripts/fastweights_results.py

results-acktr: $(STAMP)
	$(PY) scripts/acktr_results.py

results-revrnn: $(STAMP)
	$(PY) scripts/revrnn_results.py

bench-gnf: $(STAMP)
	$(PY) scripts/bench_gnf_memory.py

results-gnf: $(STAMP)
	$(PY) scripts/gnf_results.py

results-lookahead: $(STAMP)
	$(PY) scripts/lookahead_results.py

clean-venv:
	rm -rf .venv
