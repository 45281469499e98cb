# One-stop targets. `make install` builds .venv; every other target depends on it.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
EXP     ?= fastweights_retrieval
ARGS    ?=
STAMP   := .venv/.installed-stamp
# reproduce-*: LAUNCHER=basic (one run after another) | joblib (parallel here) | submitit_local | slurm;
# DATA: data.root for experiments that read external data (PTB, Planetoid, CIFAR, ...)
LAUNCHER ?= basic
DATA    ?= data
RUNS    ?= runs/reproduce
PAPERS  := fastweights acktr revrnn lookahead gnf

.PHONY: install test list probe mutation run reproduce-all reproduce-small results $(addprefix reproduce-,$(PAPERS)) bench-fastweights bench-acktr bench-lookahead bench-revrnn bench-gnf gpu-check clean-venv

install: $(STAMP)

# pip, not uv/poetry: torch==2.14.1 / torchvision==0.29.1 resolve from the machine's local wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip wheel setuptools
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps "polygraph-benchmark==1.1.0"
	touch $(STAMP)

# Both cores: pytest-xdist runs the tests in 2 processes (tests are safe to run in parallel).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal tests

# Mutation testing of each paper's core (scripts/mutation.py, mutmut 3): FILE=algorithms/kfac.py for one file;
# resumable; writes results/mutation/README.md. Hours for all files on 2 cores; not part of make test.
mutation: $(STAMP)
	$(PIP) install --quiet "mutmut>=3.8,<4"
	$(PY) scripts/mutation.py $(if $(FILE),--file $(FILE))

# Every experiment with its paper, what it runs, its scale and its cost on a 2-core CPU.
list: $(STAMP)
	@$(PY) run.py --list

# Bad input a user would hit, each run as a user would: a markdown table (README "What happens when...").
probe: $(STAMP)
	$(PY) scripts/probe_bad_input.py --jobs 2

run: $(STAMP)
	$(PY) run.py experiment=$(EXP) $(ARGS)

bench-fastweights: $(STAMP)
	$(PY) scripts/bench_fastweights.py

bench-acktr: $(STAMP)
	$(PY) scripts/bench_acktr.py

bench-lookahead: $(STAMP)
	$(PY) scripts/bench_lookahead.py

bench-revrnn: $(STAMP)
	$(PY) scripts/bench_revrnn.py

bench-gnf: $(STAMP)
	$(PY) scripts/bench_gnf_memory.py

# On a CUDA machine (under 10 minutes on one GPU): every experiment family's smoke on CUDA (AMP where used) and the
# GPU timings the benchmarks promise; writes results/gpu_check/ with the hardware.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py --out results/gpu_check

# Every paper-full experiment with the papers' seeds, as Hydra multiruns; re-running skips finished runs
# and resumes interrupted ones from their checkpoints (resume=auto). ARGS: overrides for every run.
reproduce-all: $(STAMP)
	$(PY) scripts/reproduce.py --scale full --launcher $(LAUNCHER) --root $(RUNS) --data-root $(DATA) $(ARGS)

$(addprefix reproduce-,$(PAPERS)): reproduce-%: $(STAMP)
	$(PY) scripts/reproduce.py --scale full --paper $* --launcher $(LAUNCHER) --root $(RUNS) --data-root $(DATA) $(ARGS)

# A first look: every CPU-small configuration, one seed, short budgets (scripts/reproduce.py). The committed
# results come from the commands on each paper's results page.
reproduce-small: $(STAMP)
	$(PY) scripts/reproduce.py --scale small --launcher $(LAUNCHER) --root $(RUNS) --data-root $(DATA) $(ARGS)

# The claims ledgers (results/claims/<paper>.yaml) checked against the committed runs: every paper's page with its
# claims' status and 95% intervals, runs.csv, figures, results/README.md (scripts/results.py). Copy finished runs in
# first with `python scripts/results.py --collect <sweep folder> --paper <paper>`. WANDB=entity/project also pulls
# the W&B run summaries (online).
results: export SOURCE_DATE_EPOCH := 0
results: $(STAMP)
	$(PY) scripts/results.py $(if $(WANDB),--wandb $(WANDB))

clean-venv:
	rm -rf .venv
