"""Partial reruns: after a finished run, a config change reruns exactly the jobs that depend on it.

A finished run of config/test.yaml is faked once per module: every output file (or folder) is created empty and then
`snakemake --touch --forceall` stamps them in DAG order and records Snakemake's metadata (params, input,
code), as a real run does. Each test changes one setting and reads the jobs a dry run (`-n`) plans, with
their reasons (`--list-changes params` is unreliable in Snakemake 9.27, see issue 7).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ENV, ROOT, snakemake

# Rules upstream of the GANs: a change downstream of them must never rerun these.
DATA_RULES = {"phantom", "prepare", "patches", "training_set"}
# Rules that read real data only (no GAN, no U-Net).
REAL_ONLY_RULES = DATA_RULES | {"ssim_real"}
# Rules that train or sample a generator (a GAN, or Private Evolution's population).
GAN_RULES = {"gan", "gan_pretrain", "pe", "synth", "synth_public"}
# test.yaml's Private Evolution run at epsilon 10 (2 rounds, delta 8e-4) and its placebo.
PE_SOURCES = {"pe~0.5814/seed~0", "pe-placebo~0.5814/seed~0"}
# Outputs that are directories (`predict`: one folder per U-Net and split).
DIRECTORY_OUTPUTS = ("results/predictions/",)


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: tuple[tuple[str, str], ...]
    reason: str

    @property
    def wc(self) -> dict[str, str]:
        return dict(self.wildcards)

    def branch(self) -> str | None:
        """The training source a job belongs to (`real`, `sigma~S/seed~N`, `placebo~S/seed~N`); None for aggregates."""
        wc = self.wc
        if "source" in wc:
            return wc["source"]
        if "sigma" in wc:
            return f"{wc.get('kind', 'sigma')}~{wc['sigma']}/seed~{wc['seed']}"
        return None

    def __str__(self) -> str:
        wildcards = ",".join(f"{k}={v}" for k, v in self.wildcards)
        return f"{self.rule}[{wildcards}] ({self.reason})"


def planned_jobs(output: str) -> list[Job]:
    """The jobs a dry run lists: rule, wildcards and reason of each `rule X:` block (a group's members, such as
    the score jobs, are listed indented under their group job)."""
    jobs = []
    for block in re.split(r"^(?=(?:    )?(?:local)?rule \w+:$)", output, flags=re.M):
        head = re.match(r"(?:    )?(?:local)?rule (\w+):$", block, flags=re.M)
        if not head:
            continue
        fields = dict(re.findall(r"^ {4,8}(\w+): (.*)$", block, flags=re.M))
        wildcards = tuple(
            tuple(item.split("=", 1)) for item in fields.get("wildcards", "").split(", ") if "=" in item
        )
        jobs.append(Job(head.group(1), wildcards, fields.get("reason", "")))
    return jobs


def write_config(directory: Path, name: str, change) -> Path:
    """config/test.yaml with `change(config)` applied, as DIR/NAME.yaml."""
    config = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    change(config)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A working directory in which config/test.yaml has (seemingly) run to completion."""
    workdir = tmp_path_factory.mktemp("finished")
    config = str(ROOT / "config/test.yaml")
    summary = snakemake(workdir, "--summary", "--configfile", config)
    assert summary.returncode == 0, summary.stdout[-3000:]
    rows = [line.split("\t") for line in summary.stdout.splitlines()]
    outputs = [row[0] for row in rows if len(row) >= 5 and row[4] == "missing"]
    assert len(outputs) > 50, summary.stdout[-3000:]
    for path in outputs:
        if path.startswith(DIRECTORY_OUTPUTS):
            (workdir / path).mkdir(parents=True)
            continue
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).touch()
    touched = snakemake(workdir, "--touch", "--forceall", "--configfile", config)
    assert touched.returncode == 0, touched.stdout[-3000:]
    return workdir


def dry_run(workdir: Path, config: Path | str) -> list[Job]:
    result = snakemake(workdir, "-n", "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    return planned_jobs(result.stdout)


def test_finished_run_needs_nothing(finished_run):
    result = snakemake(finished_run, "-n", "--configfile", str(ROOT / "config/test.yaml"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Nothing to be done" in result.stdout
    assert planned_jobs(result.stdout) == []


def test_changing_one_sigma_reruns_only_that_gans_branch(finished_run, tmp_path):
    """sigma 1.0 -> 1.2 (and its placebo): the new GAN and placebo, their synthetic sets, U-Nets and scores; the
    rest stays."""
    config = write_config(tmp_path, "sigma", lambda c: c["gan"].update(sigmas=["inf", 1.2], placebo=[1.2]))
    jobs = dry_run(finished_run, config)
    by_rule = {job.rule for job in jobs}
    assert {"gan", "synth", "unet", "predict", "score", "tables", "all"} <= by_rule
    assert sorted(job.branch() for job in jobs if job.rule == "gan") == ["placebo~1.2/seed~0", "sigma~1.2/seed~0"]
    for job in jobs:
        assert job.rule not in REAL_ONLY_RULES, job
        assert job.branch() in (None, "sigma~1.2/seed~0", "placebo~1.2/seed~0"), job
    units = {(job.branch(), job.wc["setting"], job.wc["split"]) for job in jobs if job.rule == "predict"}
    assert len(units) == 2 * 3  # the new source and its placebo x 1 U-Net setting x 3 evaluation splits


def test_changing_a_gan_setting_retrains_gans_but_not_data_or_real_unets(finished_run, tmp_path):
    """gan.lr: the warm start and every GAN (params changed) and everything built from GANs; data and real
    U-Nets stay."""
    config = write_config(tmp_path, "gan_lr", lambda c: c["gan"].update(lr=1.0e-4))
    jobs = dry_run(finished_run, config)
    gans = [job for job in jobs if job.rule == "gan"]
    assert {job.branch() for job in gans} == {"sigma~inf/seed~0", "sigma~1/seed~0", "placebo~1/seed~0"}
    pretrain = [job for job in jobs if job.rule == "gan_pretrain"]
    assert len(pretrain) == 1 and pretrain[0].reason.startswith("Params have changed")
    assert all("results/gan/public/generator.pt" in job.reason or job.reason.startswith("Params") for job in gans)
    for job in jobs:
        assert job.rule not in REAL_ONLY_RULES, job
        assert job.branch() != "real", job
    assert {"synth", "unet", "predict", "score", "tables"} <= {job.rule for job in jobs}


def test_changing_a_unet_setting_does_not_retrain_gans(finished_run, tmp_path):
    """unet.epochs: every U-Net (params changed), their predictions and tables; no GAN, no synthetic set."""
    config = write_config(tmp_path, "unet_epochs", lambda c: c["unet"].update(epochs=2))
    jobs = dry_run(finished_run, config)
    unets = [job for job in jobs if job.rule == "unet"]
    assert len(unets) == 7  # sources real, sigma~inf, sigma~1, placebo~1, public and the two PE, 1 setting
    assert all(job.reason.startswith("Params have changed") for job in unets), unets
    for job in jobs:
        assert job.rule not in REAL_ONLY_RULES | GAN_RULES, job
    assert {"predict", "score", "tables"} <= {job.rule for job in jobs}


def test_adding_a_unet_setting_trains_only_the_new_setting(finished_run, tmp_path):
    """unet.dropout [0] -> [0, 0.1]: the new setting's U-Nets for each source, nothing already trained."""
    config = write_config(tmp_path, "unet_grid", lambda c: c["unet"].update(dropout=[0.0, 0.1]))
    jobs = dry_run(finished_run, config)
    trained = {job.wc["setting"] for job in jobs if job.rule in ("unet", "predict", "score")}
    assert trained == {"lr-0.0001_dropout-0.1_augment-off"}
    for job in jobs:
        assert job.rule not in REAL_ONLY_RULES | GAN_RULES, job


def test_changing_the_patch_seed_reruns_everything_downstream(finished_run, tmp_path):
    """patches.seed: new patches for every patient, so every GAN, synthetic set, U-Net and score."""
    config = write_config(tmp_path, "patch_seed", lambda c: c["patches"].update(seed=1))
    jobs = dry_run(finished_run, config)
    rules = {job.rule for job in jobs}
    assert not rules & {"phantom", "prepare"}
    assert {"patches", "training_set", "gan", "synth", "unet", "predict", "score", "tables"} <= rules
    assert sum(job.rule == "patches" for job in jobs) == 10  # 6 cohort patients, the public one, 3 stand-ins
    assert {job.branch() for job in jobs if job.rule == "unet"} == {
        "real", "sigma~inf/seed~0", "sigma~1/seed~0", "placebo~1/seed~0", "public", *PE_SOURCES
    }
    assert {job.branch() for job in jobs if job.rule == "pe"} == PE_SOURCES


def test_changing_the_phantom_seed_reruns_everything(finished_run, tmp_path):
    """data.phantom.seed: new subjects, hence every job of the workflow."""
    config = write_config(tmp_path, "phantom_seed", lambda c: c["data"]["phantom"].update(seed=7))
    jobs = dry_run(finished_run, config)
    rules = {job.rule for job in jobs}
    assert sum(job.rule == "phantom" for job in jobs) == 10
    assert {"prepare", "patches", "training_set", "gan", "synth", "unet", "predict", "score", "tables"} <= rules


def test_changing_gan_epochs_retrains_gans(finished_run, tmp_path):
    config = write_config(tmp_path, "gan_epochs", lambda c: c["gan"].update(epochs=3))
    jobs = dry_run(finished_run, config)
    gans = [job for job in jobs if job.rule == "gan"]
    assert {job.branch() for job in gans} == {"sigma~inf/seed~0", "sigma~1/seed~0", "placebo~1/seed~0"}
    assert not {job.rule for job in jobs} & REAL_ONLY_RULES


# Run inside `python -c`: a dry run that reports every non-derived param Snakemake cannot record.
_UNTRACKED_PARAMS = """
import sys
from snakemake.cli import main
from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

_params = PersistenceBase._params.__wrapped__

def checked(self, job):
    for value in job.non_derived_params:
        if self._serialize_param(value) is UNREPRESENTABLE:
            print(f"UNTRACKED {job.rule.name} {type(value).__module__}.{type(value).__name__} {value!r}")
    return _params(self, job)

PersistenceBase._params = checked
main(sys.argv[1:])
"""


def test_every_param_is_recorded(finished_run):
    """A param Snakemake cannot serialise (e.g. a numpy number) is silently left out of the rerun check."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _UNTRACKED_PARAMS, "-s", str(ROOT / "Snakefile"), "--cores", "1", "-n",
         "--configfile", str(ROOT / "config/test.yaml")],
        cwd=finished_run, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    untracked = sorted({line for line in result.stdout.splitlines() if line.startswith("UNTRACKED")})
    assert untracked == []
