# Two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv (Python 3.11) and install the pinned requirements on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: venv demo test test-slow test-oracles test-upstream bench dryrun resume clean-demo known-answer

venv: $(STAMP)

# torch first, alone: pip then takes the CPU wheel of the pinned version instead of
# resolving a multi-GB CUDA build as a dependency of another package.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11, 4) else "Python >= 3.11.4 is needed (archive extraction uses tarfile'"'"'s data filter, new in 3.11.4); $(PYTHON) is %d.%d.%d: give another with make PYTHON=..." % sys.version_info[:3])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$$(grep -E '^torch==' requirements.txt)"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$$(grep -E '^torch==' requirements.txt | cut -d= -f3)') else f'torch {v} replaced the pinned build')"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake all --cores $(CORES) --configfile config/demo.yaml
	$(BIN)/snakemake --configfile config/demo.yaml --report results/report/report.html
	@echo "Demo report: results/report/summary.md, results/report/<dataset>_table.md and results/report/report.html"

# the default suite (about 12 minutes on 2 cores); the whole-workflow runs are test-slow
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# whole-workflow runs: the demo end to end, a kill -9 and the documented resume, the demo on a
# real single-host SLURM cluster (as root with apt; otherwise skipped with the reason)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# our encoders against the published reference code; installs the references first
# (tests/oracles/requirements*.txt, never vendored) without letting them move our pins
ORACLE_STAMP := $(VENV)/.oracles-installed
$(ORACLE_STAMP): $(STAMP) tests/oracles/requirements.txt tests/oracles/requirements-deps.txt
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python -r tests/oracles/requirements.txt
	$(BIN)/pip install --quiet -r tests/oracles/requirements-deps.txt "$$(grep -E '^torch==' requirements.txt)"
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$$(grep -E '^torch==' requirements.txt | cut -d= -f3)') else 'an oracle requirement replaced torch')"
	touch $(ORACLE_STAMP)

test-oracles: $(ORACLE_STAMP)
	$(BIN)/python -m pytest tests/oracles

# the first real run rehearsed at a reduced count (a few minutes): every dataset downloaded and
# preprocessed by snakemake --cores 8 from a hostile local stand-in of the upstream hosts, kill -9
# and the resume step, then a 0-job dry run, raw/ byte-identical to what was served, drops with
# their true reasons; fails on any of these (bench/download_rehearsal.py; larger counts:
# .venv/bin/python -m bench --only download_rehearsal, BENCHMARKS.md section 8)
test-upstream: $(STAMP)
	$(BIN)/python -m bench.download_rehearsal --quick --out "$$(mktemp -d)"

# the known-answer benchmark (docs/known_answer.md): planted answers through the real workflow
# (preprocess, embeddings imported through esm.precomputed, train, report), then the checker,
# which prints its table, writes results/report/known_answer.{md,png} and fails the target when
# an expectation does not hold
KNOWN_ANSWER := resources/known_answer/embeddings.h5
$(KNOWN_ANSWER): $(STAMP) bihmf/data/known_answer.py demo/ppbs_demo.tar.gz
	$(BIN)/python -m bihmf.known_answer build --out resources/known_answer demo/ppbs_demo.tar.gz

known-answer: $(KNOWN_ANSWER)
	$(BIN)/snakemake all --cores $(CORES) --configfile config/known_answer.yaml
	$(BIN)/python -m bihmf.known_answer check --configfile config/known_answer.yaml --out results/report/known_answer

# every benchmark side by side; rewrites BENCHMARKS.md (about 12 minutes on 2 cores, plus about 13 for the scale rehearsal at the full dataset counts)
bench: $(STAMP)
	$(BIN)/python -m bench

# continue a local run killed hard (kill -9, OOM killer, power cut), which leaves Snakemake's
# lock behind: ARGS are the killed command's arguments, e.g.
#   make resume ARGS="all --cores 8 --resources gpu=2"
# refuses while a Snakemake or one of its jobs still runs here; else unlocks and reruns
ARGS ?= all --cores $(CORES)
resume: $(STAMP)
	$(BIN)/python -m bihmf resume $(ARGS)

dryrun: $(STAMP)
	$(BIN)/snakemake all --cores 8 --resources gpu=2 --dry-run

clean-demo:
	rm -rf results/data/ppbs_demo results/embeddings/ppbs_demo results/runs/ppbs_demo results/report/ppbs_demo_* resources/datasets/ppbs_demo
