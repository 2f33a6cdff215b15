"""Cluster scale: the paper-sized DAG builds within budget, and profiles/slurm runs on a real SLURM.

The SLURM tests start a private single-node cluster (Debian's munge + slurm-wlm, see .ci/local_slurm.py) with
a fake V100, run the workflow through `snakemake --profile profiles/slurm`, and stop every daemon and job
afterwards, also when a test fails. CI installs the packages (.ci/run) and sets DPMRA_REQUIRE_SLURM=1, so
there a missing SLURM fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ENV, ROOT, save, toy_subject

# Paper cohort (Kossen et al. 2022): PEGASUS 41 / 11 / 14, 1000Plus 65.
PAPER_SPLITS = {"train": 41, "val": 11, "test": 14, "external": 65}
PAPER_SOURCES = 1 + 8 * 5  # real + 8 sigmas x 5 seeds (the seed list applies to inf too)
PAPER_SETTINGS = 8
# Rules profiles/slurm sends to the GPU partition with one GPU.
GPU_RULES = {"gan", "gan_pretrain", "dp_audit", "unet", "predict", "quality"}
# Cheap rules that run in the Snakemake process, never as SLURM jobs (`localrules`, `localrule: True`).
LOCAL_RULES = {
    "all", "release", "secret_key", "privacy_table", "tables", "quality_tables", "dp_audit_table", "dp_audit_figure",
    "release_bundle", "fig2_samples", "fig3_test_utility", "fig4_error_maps", "fig5_external_utility", "fig6_fid",
    "fig7_segmentation", "fig8_ssim", "fig9_tsne", "privacy_utility_figure", "audit_figure", "gan_curves_figure",
    "table1_html", "summary_html", "quality_html", "audit_html",
}

_spec = importlib.util.spec_from_file_location("local_slurm", ROOT / ".ci" / "local_slurm.py")
local_slurm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_slurm)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    counts = {}
    for line in output.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


# --- item 3: the paper's DAG ---------------------------------------------------------------------------


def paper_manifest(directory: Path) -> Path:
    """A manifest of the paper's 131 patients, all pointing at one toy subject (a dry run reads no voxel)."""
    image, label, mask = toy_subject()
    files = [save(data, directory / f"{name}.nii.gz") for name, data in
             (("tof", image), ("vessels", label), ("mask", mask))]
    rows = []
    for split, n in PAPER_SPLITS.items():
        site = "1000Plus" if split == "external" else "PEGASUS"
        rows += [{"patient": f"{split[:2].upper()}{i:03d}", "site": site, "split": split,
                  "image": str(files[0]), "label": str(files[1]), "brain_mask": str(files[2])} for i in range(n)]
    path = directory / "samples.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_paper_config_builds_its_dag(tmp_path):
    """The paper's 2,768 jobs plan from a manifest (their planning time is in docs/cluster.md, not asserted here)."""
    manifest = paper_manifest(tmp_path)
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    config["data"]["manifest"] = str(manifest)
    # The DAG does not depend on the backbone; inception-v3 would stop here without pytorch-fid (test_workflow).
    config["quality"]["backbone"] = "auto"
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1", "-n", "--quiet", "rules",
         "--configfile", "paper.yaml"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    counts = job_counts(result.stdout)
    patients = sum(PAPER_SPLITS.values())
    unets = PAPER_SOURCES * PAPER_SETTINGS
    expected = {
        "prepare": patients, "patches": patients, "training_set": 1, "gan": 40, "synth": 40, "quality": 40,
        "audit": 40, "unet": unets, "score": unets * 3, "tables": 1,
        "predict": unets * 3,
    }
    assert {rule: counts.get(rule) for rule in expected} == expected
    assert "phantom" not in counts


# --- item 1: the profile's routing, without a cluster ----------------------------------------------------


def profile_dry_run(workdir: Path, **site: str) -> dict[str, set[str]]:
    """`snakemake --profile profiles/slurm -n` of the tiny config: each rule's `resources:` lines."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        if os.environ.get("DPMRA_REQUIRE_SLURM") == "1":
            pytest.fail("snakemake-executor-plugin-slurm is not installed")
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    env = {k: v for k, v in ENV.items() if not k.startswith("DPMRA_SLURM_")}
    env.update({f"DPMRA_SLURM_{k.upper()}": v for k, v in site.items()})
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles/slurm"),
         "-n", "--configfile", str(ROOT / "config/test.yaml")],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    resources: dict[str, set[str]] = {}
    # A job of a group job (score) is listed indented under its group.
    for indent, rule, block in re.findall(
        r"^( *)(?:local)?rule (\w+):\n((?:\1    .*\n)+)", result.stdout, flags=re.M
    ):
        lines = dict(re.findall(r"^ +(\w+): (.*)$", block, flags=re.M))
        resources.setdefault(rule, set()).update(lines.get("resources", "").split(", "))
    return resources


def test_profile_sends_gpu_rules_to_the_gpu_partition(tmp_path):
    resources = profile_dry_run(tmp_path)
    assert GPU_RULES | {"score"} <= set(resources)
    for rule, items in resources.items():
        if rule == "all":
            continue
        if rule in GPU_RULES:
            assert {"slurm_partition=gpu", "gpu=1", "gpu_model=v100"} <= items, (rule, items)
            assert not any(item.startswith("cpus_per_task") for item in items), (rule, items)
        else:
            assert "slurm_partition=cpu" in items and "gpu=1" not in items, (rule, items)
        assert not any(item.startswith("slurm_account") for item in items), (rule, items)
    assert "mem_mb=32000" in resources["gan"] and "runtime=2880" in resources["gan"]


def test_profile_site_settings_are_one_place(tmp_path):
    """The variables at the top of the profile reach every rule; empty ones drop their sbatch option."""
    resources = profile_dry_run(
        tmp_path, cpu_partition="short", gpu_partition="a100", gpu_model="", gpu_constraint="a100&nvlink",
        account="proj42",
    )
    for rule, items in resources.items():
        if rule == "all":
            continue
        assert "slurm_account=proj42" in items, (rule, items)
        if rule in GPU_RULES:
            assert {"slurm_partition=a100", "gpu=1", "constraint=a100&nvlink"} <= items, (rule, items)
            assert not any(item.startswith("gpu_model") for item in items), (rule, items)
        else:
            assert "slurm_partition=short" in items and not any(i.startswith("constraint") for i in items)


def test_profile_packs_score_jobs_and_cuts_no_rule():
    """Per-submission limits (cores, resources.mem_mb) size the score groups; they also cap every single job."""
    text = (ROOT / "profiles/slurm/config.yaml").read_text()
    profile = yaml.safe_load(text)
    assert profile["group-components"]["score"] > 1 and profile["group-components"]["patient"] > 1
    assert max(profile["set-threads"].values()) <= profile["cores"]
    memory = [int(m) for m in re.findall(r"mem_mb=(\d+)", text)]
    assert memory and max(memory) <= profile["resources"]["mem_mb"]


# --- item 6: a real SLURM ------------------------------------------------------------------------------


def require_slurm(plugin: bool = False) -> None:
    """Skip where SLURM cannot run here, except in CI (DPMRA_REQUIRE_SLURM=1), where that is a failure."""
    problem = local_slurm.available()
    if not problem and plugin and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        problem = "snakemake-executor-plugin-slurm is not installed"
    if problem:
        if os.environ.get("DPMRA_REQUIRE_SLURM") == "1":
            pytest.fail(f"local SLURM required (DPMRA_REQUIRE_SLURM=1) but {problem}")
        pytest.skip(f"local SLURM unavailable: {problem}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A private single-node SLURM for this module; always stopped, with nothing left running."""
    require_slurm(plugin=True)
    cluster = local_slurm.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    with cluster:
        yield cluster
    assert cluster.leftovers() == [], "processes of the test cluster survived its teardown"


def small_config(directory: Path) -> Path:
    """config/test.yaml cut to one GAN, one U-Net setting, no warm start, placebo, PE or DP audit: every SLURM job pays two
    Snakemake start-ups (their routing is checked by the dry run of test_profile_sends_gpu_rules_to_the_gpu_partition)."""
    config = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    config["data"]["phantom"]["splits"] = {
        "train": {"site": "A", "patients": 2}, "val": {"site": "A", "patients": 1},
        "test": {"site": "A", "patients": 1}, "external": {"site": "B", "patients": 1},
    }
    config["data"]["phantom"]["public"] = None
    config["gan"]["pretrain"] = {"set": None}
    config["audit"]["dp"] = {"runs": []}
    config["gan"]["placebo"] = []
    config["gan"]["sigmas"] = [1.0]
    config["pe"] = {**config["pe"], "epsilons": [], "placebo": []}
    config["unet"]["augment"] = [False]
    path = directory / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# Snakemake with the SLURM plugin polling job status every 3 s. The plugin waits 10 s longer after every poll
# that finds no finished job (up to 180 s): right for a busy cluster, but here, where each job takes 10-40 s,
# it would add minutes of idle time to the test. Everything else is the plugin as it ships.
_FAST_POLLING = """
import sys
from snakemake_executor_plugin_slurm import Executor
Executor.next_seconds_between_status_checks = property(lambda self: 3, lambda self, value: None)
from snakemake.cli import main
main(sys.argv[1:])
"""


def sbatch_calls(log: str) -> dict[str, list[str]]:
    """The sbatch command lines Snakemake logged (--verbose), by rule; a group job's as `group:GROUP`."""
    calls = {}
    for line in log.splitlines():
        if "sbatch call: " in line:
            call = line.split("sbatch call: ", 1)[1].split(" --wrap=")[0]
            group = re.search(r"/group_(\w+?)_\w+/", call)  # its SLURM log: .snakemake/slurm_logs/group_<id>_<rules>/
            rule = re.search(r"--comment '?rule_(\w+?)(?:_wildcards|'|\s|$)", call).group(1)
            calls.setdefault(f"group:{group.group(1)}" if group else rule, []).append(call)
    return calls


@pytest.mark.workflow
def test_tiny_config_runs_on_slurm_with_gpu_routing(slurm, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = small_config(tmp_path)
    env = {
        **slurm.env, "PATH": f"{slurm.root / 'bin'}{os.pathsep}{ENV['PATH']}",
        # The site settings of profiles/slurm, overridden as a site would: partition names only.
        "DPMRA_SLURM_CPU_PARTITION": local_slurm.PARTITIONS["cpu"],
        "DPMRA_SLURM_GPU_PARTITION": local_slurm.PARTITIONS["gpu"],
    }
    result = subprocess.run(
        [sys.executable, "-c", _FAST_POLLING, "-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles/slurm"),
         "--configfile", str(config), "--verbose",
         # No slurmdbd here: status from squeue (MinJobAge 3600 s), checked soon after submission.
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
         "--latency-wait", "10", "--retries", "0"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500,
    )
    (tmp_path / "snakemake.log").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-5000:] + "\n" + slurm.logs()

    # Routing: GPU rules asked SLURM for the GPU partition and one V100, CPU rules for the CPU partition.
    calls = sbatch_calls(result.stdout)
    ran = GPU_RULES - {"gan_pretrain", "dp_audit"}
    assert ran | {"group:patient", "training_set", "synth", "group:score"} <= set(calls)
    for rule, rule_calls in calls.items():
        for call in rule_calls:
            if rule in GPU_RULES:
                assert f"-p {local_slurm.PARTITIONS['gpu']}" in call and "--gpus=v100:1" in call, call
            else:
                assert f"-p {local_slurm.PARTITIONS['cpu']}" in call and "--gpus" not in call, call
            assert "--requeue" in call and "--mem " in call and " -t " in call, call
    assert all("--cpus-per-task=4" in call for call in calls["gan"]), calls["gan"]
    # Cheap rules ran in the Snakemake process; the 6 score jobs (2 sources x 3 splits) went as one submission,
    # side by side within the profile's per-submission cores and memory: 6 CPUs, 6 x 8000 MB, one 60 min round.
    assert not LOCAL_RULES & set(calls), sorted(LOCAL_RULES & set(calls))
    assert "score" not in calls and len(calls["group:score"]) == 1, calls.get("group:score")
    # The 5 patients' phantom, prepare and patches jobs: one submission, not 15.
    assert not {"phantom", "prepare", "patches"} & set(calls) and len(calls["group:patient"]) == 1, calls.keys()
    (score,) = calls["group:score"]
    assert "--cpus-per-task=6" in score and "--mem 48000" in score and " -t 60" in score, score
    # ... and SLURM granted it: the GAN job held the node's (fake) GPU.
    jobs = slurm.run("squeue", "-h", "-t", "all", "-O", "Comment:60,Partition:20,tres-per-job:40").stdout
    gan_jobs = [line for line in jobs.splitlines() if line.startswith("rule_gan_wildcards")]
    assert gan_jobs and all("ci_gpu" in line and "gpu:v100:1" in line for line in gan_jobs), jobs

    # Outputs of the whole chain, on the shared file system.
    results = workdir / "results"
    table = pd.read_csv(results / "gan/sigma~1/seed~0/epochs.tsv", sep="\t")
    assert table["epoch"].tolist() == [1, 2] and np.isfinite(table["epsilon_rdp"]).all()
    assert (results / "synth/sigma~1/seed~0/privacy_card.json").exists()
    table1 = pd.read_csv(results / "tables/table1.tsv", sep="\t")
    assert set(table1["source"]) == {"real", "sigma~1/seed~0"}
    assert set(table1["split"]) == {"test", "external"} and table1["dsc_mean"].between(0, 1).all()

    # Complete: a second (local) dry run finds nothing to do.
    again = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1", "-n",
         "--configfile", str(config)],
        cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert "Nothing to be done" in again.stdout, again.stdout[-3000:]


def test_a_failing_session_leaves_no_processes(tmp_path):
    """Leaving the cluster's context on an error stops the daemons and kills running jobs."""
    require_slurm()
    cluster = local_slurm.LocalSlurm(tmp_path / "slurm")
    with pytest.raises(RuntimeError, match="a test failed"):
        with cluster:
            job = cluster.run("sbatch", "--parsable", "-p", local_slurm.PARTITIONS["cpu"], "-o", "/dev/null",
                              "--wrap", "sleep 600").stdout.strip()
            deadline = time.monotonic() + 60
            while "RUNNING" not in cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout:
                assert time.monotonic() < deadline, cluster.logs()
                time.sleep(0.5)
            assert len(cluster.leftovers()) >= 4  # munged, slurmctld, slurmd, the job's slurmstepd and sleep
            raise RuntimeError("a test failed")
    assert cluster.leftovers() == []
