# Two commands for a newcomer: `make demo` (install + run the embedded default) and `make test`.
# Both create .venv if missing and are idempotent: the install step reruns only when pyproject.toml changes.
# After the demo: `make report`, `make release`; `make profiles` once, so that `snakemake --profile local` and
# `snakemake --profile slurm` work by name (in a shell where `source .venv/bin/activate` ran).

PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; set TORCH_SPEC to your site's build (e.g. a CUDA wheel) on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.dpmra-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo study test report release profiles lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)

# The study at its own scale (docs/study.md): about 2.5 hours on 2 loaded cores; it writes results/, so run it in its own clone.
study: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --configfile config/study.yaml

report: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --report results/report.html

release: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) release

# Links profiles/local and profiles/slurm into Snakemake's user profile folder (~/.config/snakemake), by name.
profiles: | $(STAMP)
	$(BIN)/dpmra profiles --profiles profiles

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results .snakemake
