"""The rule files without a run: commands read only declared files, cheap rules stay local, scores are grouped,
and priorities put the longest path (warm start, GAN runs, releases, U-Nets, predictions) first.

Light checks (a dry run and a parse of the workflow, seconds each) of what a run or the SLURM test would find
only much later: a command reading a folder its job never declared, a table or figure sent to the cluster as
a job of its own, the per-patient score jobs submitted one by one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import ENV, ROOT

# Rules that run in the Snakemake process (`localrules:` in the Snakefile, `localrule: True` in figures.smk).
LOCAL_RULES = {
    "all", "release", "secret_key", "privacy_table", "tables", "quality_tables", "dp_audit_table", "dp_audit_figure",
    "release_bundle", "fig2_samples", "fig3_test_utility", "fig4_error_maps", "fig5_external_utility", "fig6_fid",
    "fig7_segmentation", "fig8_ssim", "fig9_tsne", "privacy_utility_figure", "audit_figure", "gan_curves_figure",
    "table1_html", "summary_html", "quality_html", "audit_html",
}

_RULES = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings
root = Path(sys.argv[1])
with SnakemakeApi() as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(configfiles=[root / "config/test.yaml"]),
        snakefile=root / "Snakefile",
        workdir=Path(sys.argv[2]),
    )._workflow
    # `_group` and `_localrules`: Rule.group and is_local() answer None and True in a local run.
    patients = workflow.globals["patients"]
    def priority(rule):  # a rule's priority, or per patient (split:priority) where it is a function of one
        if not callable(rule.priority):
            return rule.priority
        return {f"{patients.loc[p, 'split']}:{rule.priority(SimpleNamespace(patient=p))}" for p in patients.index}
    print(json.dumps({
        rule.name: {"local": rule.name in workflow._localrules or rule.norun, "group": rule._group,
                    "priority": sorted(p) if isinstance(p := priority(rule), set) else p}
        for rule in workflow.rules
    }))
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict[str, dict]:
    """Every rule of the workflow (tiny config): whether it is local, and its group."""
    workdir = tmp_path_factory.mktemp("rules")
    result = subprocess.run(
        [sys.executable, "-c", _RULES, str(ROOT), str(workdir)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cheap_rules_are_local_scores_and_patients_grouped(rules):
    assert {name for name, rule in rules.items() if rule["local"]} == LOCAL_RULES
    assert {name: rule["group"] for name, rule in rules.items() if rule["group"]} == {
        "score": "score", "phantom": "patient", "prepare": "patient", "patches": "patient"
    }


def test_priorities_run_the_longest_path_first(rules):
    priority = {name: rule["priority"] for name, rule in rules.items()}
    chain = [priority[name] for name in ("gan_pretrain", "gan", "synth", "unet", "predict")]
    assert chain == sorted(chain, reverse=True) and len(set(chain)) == len(chain) and chain[-1] > 0
    assert priority["public_set"] == priority["secret_key"] == priority["gan_pretrain"]
    assert priority["dp_audit"] == priority["gan"] == priority["pe"] and priority["synth_public"] == priority["synth"]
    public_first = {f"public:{priority['gan_pretrain']}", "train:0", "val:0", "test:0", "external:0", "placebo:0"}
    assert priority["phantom"] == priority["prepare"] == priority["patches"] == sorted(public_first)
    others = set(priority) - {"gan_pretrain", "public_set", "secret_key", "gan", "pe", "dp_audit", "synth", "synth_public",
                              "unet", "predict", "phantom", "prepare", "patches"}
    assert {priority[name] for name in others} == {0}


def dry_run_jobs(workdir) -> list[dict]:
    """`snakemake -n -p` of the tiny config: per job its rule, files and shell command (group members too)."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1", "-n", "-p",
         "--configfile", str(ROOT / "config/test.yaml")],
        cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    jobs = []
    for indent, rule, block, shell in re.findall(
        r"^( *)(?:local)?rule (\w+):\n((?:\1    .*\n)+)(?:Shell command: (.*)\n)?", result.stdout, flags=re.M
    ):
        fields = dict(re.findall(r"^ +(input|output|log|benchmark): (.*)$", block, flags=re.M))
        files = {f for key in ("input", "output", "log", "benchmark") for f in fields.get(key, "").split(", ") if f}
        jobs.append({"rule": rule, "files": files, "shell": shell})
    return jobs


def test_every_results_path_a_command_names_is_declared(tmp_path):
    """A path under results/ in a command is a file of its job, or the folder that declared files lie in."""
    jobs = dry_run_jobs(tmp_path)
    assert {"score", "tables", "fig2_samples", "fig4_error_maps", "fig7_segmentation"} <= {j["rule"] for j in jobs}
    for job in jobs:
        for path in re.findall(r"(?<![\w/])results/[^\s'\"()]+", job["shell"]):
            folder = path.rstrip("/") + "/"
            assert path in job["files"] or any(f.startswith(folder) for f in job["files"]), (job["rule"], path)


def test_rule_files_spell_no_results_path_in_a_command():
    """Every results/ path in a shell command comes from input, output, log or params read off them."""
    for rules in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = rules.read_text()
        commands = re.findall(r"^\s+shell:\n((?:\s+f?\".*\"\n)+)", text, flags=re.M)
        spelt = [m for command in commands for m in re.findall(r"--[\w-]+ results/\S*", command)]
        assert spelt == [], (rules.name, spelt)


def test_rules_made_in_a_loop_have_a_constant_shell_line():
    """Snakemake evaluates a shell: expression once more when the job runs, when a loop variable holds the last
    entry: a rule made in a loop (`rule:` with `name:`) takes what varies from params, never from an f-string."""
    for rules in sorted((ROOT / "workflow/rules").glob("*.smk")):
        for block in re.findall(r"^( +)rule:\n((?:\1 .*\n|\n)+)", rules.read_text(), flags=re.M):
            shell = re.search(r"^\s+shell:\n\s+(.*)$", block[1], flags=re.M)
            assert shell and not shell[1].startswith("f"), (rules.name, shell and shell[1])
