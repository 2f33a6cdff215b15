#!/usr/bin/env bash
# Install this checkout's dpmra into the new environment, without its dependencies (the environment file
# pins them; dpmra's own requirements would pull torch into the light environment).
# Snakemake copies environment files into .snakemake/conda/, so the checkout cannot be found relative to
# this script: it is $DPMRA_SOURCE, else the directory Snakemake runs in (the README runs it in the checkout).
set -euo pipefail
source_dir="${DPMRA_SOURCE:-$PWD}"
if ! grep -qs '^name = "dpmra"' "$source_dir/pyproject.toml"; then
    echo "dpmra checkout not found in $source_dir: run snakemake in the checkout or set DPMRA_SOURCE" >&2
    exit 1
fi
python -m pip install --no-deps -e "$source_dir"
