"""The commands a new user types, as the README writes them: profiles by name, a new shell, own data on the defaults.

Each route runs in a copy of the repository (what `git clone` gives) with a temporary HOME, so linking the
profiles never touches the real ~/.config/snakemake.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, ENV, ROOT

from dpmra.data.phantom import make_subject, write_subject
from dpmra.shared.environment import SetupError, link_profiles, path_with_dpmra, require_dpmra

README = (ROOT / "README.md").read_text()


def tracked_files() -> list[str]:
    """Files a fresh clone holds (tracked, plus new files not yet ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> dict:
    """A copy of the repository, a temporary HOME with the profiles linked (`make profiles`), an activated shell."""
    root = tmp_path_factory.mktemp("first_contact")
    repo, home = root / "dpmra", root / "home"
    for name in tracked_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    home.mkdir()
    # `make demo` made .venv in the clone; here it is a folder of links to the running one with an install stamp of
    # its own, newer than the copied pyproject.toml (copy2 kept its time): make installs nothing, so it never
    # re-points the running venv's editable install at this temporary copy (a shared stamp older than a changed
    # pyproject.toml did).
    venv = repo / ".venv"
    venv.mkdir()
    for entry in BIN.parent.iterdir():
        if entry.name != ".dpmra-installed":
            (venv / entry.name).symlink_to(entry)
    (venv / ".dpmra-installed").touch()
    env = {k: v for k, v in ENV.items() if k not in ("XDG_CONFIG_HOME", "SNAKEMAKE_PROFILE")}
    activated = {**env, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(BIN.parent)}
    return {"repo": repo, "home": home, "env": activated}


def shell(clone: dict, command: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command line as typed in the clone's folder, in the activated shell; stdout holds both streams."""
    return subprocess.run(
        command, shell=True, cwd=clone["repo"], env=clone["env"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def profiles_linked(clone) -> dict:
    """`make profiles` in the clone (the README's one step before `--profile NAME`)."""
    result = shell(clone, "make profiles")
    assert result.returncode == 0, result.stdout[-3000:]
    return clone


def test_make_profiles_links_into_the_user_folder_and_says_where(profiles_linked):
    folder = profiles_linked["home"] / ".config" / "snakemake"
    for name in ("local", "slurm"):
        link = folder / name
        assert link.is_symlink() and link.resolve() == (profiles_linked["repo"] / "profiles" / name).resolve()
    again = shell(profiles_linked, "make profiles")
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"{folder / 'slurm'} -> {(profiles_linked['repo'] / 'profiles/slurm').resolve()}" in again.stdout


@pytest.mark.parametrize("name", ["slurm", "local"])
def test_profile_by_name_dry_run(profiles_linked, name):
    result = shell(profiles_linked, f"snakemake --profile {name} -n")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"Using profile {name} for setting default command line arguments" in result.stdout
    assert re.search(r"^gan_pretrain\s+1\b", result.stdout, re.M), result.stdout[-3000:]


def test_link_profiles_refuses_a_foreign_profile_of_the_same_name(tmp_path):
    (tmp_path / "mine" / "slurm").mkdir(parents=True)
    (tmp_path / "mine" / "slurm" / "config.yaml").write_text("executor: slurm\n")
    with pytest.raises(SetupError, match=r"slurm already exist.*--profile profiles/slurm"):
        link_profiles(ROOT / "profiles", tmp_path / "mine")
    assert not (tmp_path / "mine" / "local").exists(), "nothing is linked when one name clashes"


def test_path_gets_the_scripts_folder_first_once(tmp_path):
    (tmp_path / "dpmra").write_text("#!/bin/sh\n")
    path = os.pathsep.join(["/usr/bin", str(tmp_path), "/bin"])
    assert path_with_dpmra(path, tmp_path) == os.pathsep.join([str(tmp_path), "/usr/bin", "/bin"])
    assert path_with_dpmra("/usr/bin", tmp_path / "empty") == "/usr/bin"


def test_no_dpmra_anywhere_stops_with_what_to_type(tmp_path):
    with pytest.raises(SetupError, match=r"source \.venv/bin/activate"):
        require_dpmra(str(tmp_path))


def test_venv_snakemake_in_a_new_shell_runs_jobs_that_call_dpmra(tmp_path):
    """`.venv/bin/snakemake` with a PATH that lacks the venv: the jobs' `dpmra` is found (no exit status 127)."""
    assert shutil.which("dpmra", path=ENV["PATH"]) is None or Path(shutil.which("dpmra", path=ENV["PATH"])).parent != BIN
    result = subprocess.run(
        [str(BIN / "snakemake"), "results/phantom/C000/mip.png", "results/private/secret.key", "-s",
         str(ROOT / "Snakefile"), "--cores", "1", "--configfile", str(ROOT / "config/test.yaml")],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "results/phantom/C000/image.nii.gz").stat().st_size > 0


def readme_own_data() -> tuple[str, str]:
    """The README's own-data config (the yaml block with `source: manifest`) and its run command."""
    blocks = re.findall(r"```ya?ml\n(.*?)```", README, re.S)
    config = next(b for b in blocks if "source: manifest" in b)
    command = next(
        line.strip() for line in README.splitlines() if line.strip().startswith("snakemake") and "my.yaml" in line
    )
    return config, command


def write_toy_manifest(repo: Path, manifest: str) -> list[str]:
    """Small phantom subjects written as a user's NIfTI files, and a manifest listing them; val has no mask."""
    rows = ["patient\tsite\tsplit\timage\tlabel\tbrain_mask"]
    cohort = [("P01", "train"), ("P02", "train"), ("P03", "val"), ("P04", "test")]
    for index, (patient, split) in enumerate(cohort):
        folder = repo / "mydata" / patient
        paths = write_subject(make_subject("A", 100 + index, (64, 64, 24)), folder)
        mask = "" if split == "val" else str(paths["brain_mask"].relative_to(repo))
        rows.append(
            f"{patient}\tmine\t{split}\t{paths['image'].relative_to(repo)}\t{paths['label'].relative_to(repo)}\t{mask}"
        )
    (repo / manifest).write_text("\n".join(rows) + "\n")
    return [patient for patient, _ in cohort]


@pytest.mark.workflow
def test_readme_own_data_steps_on_the_defaults(profiles_linked):
    """Steps 1-3 of the README, literally: a manifest, the README's my.yaml, its command (the DAG, then its start)."""
    config, command = readme_own_data()
    manifest = re.search(r"manifest:\s*(\S+)", config).group(1)
    repo = profiles_linked["repo"]
    patients = write_toy_manifest(repo, manifest)
    (repo / "my.yaml").write_text(config)

    plan = shell(profiles_linked, f"{command} -n")
    assert plan.returncode == 0, plan.stdout[-3000:]
    assert re.search(r"^gan_pretrain\s+1\b", plan.stdout, re.M), "the default warm start runs for a manifest"
    # The phantom renders only the public cohorts: the warm start's 3 patients and the placebo's 2 (as many as train).
    assert re.search(r"^phantom\s+5\b", plan.stdout, re.M), plan.stdout[-3000:]

    val = patients[2]
    targets = f"results/patches/public_set.npz results/patches/train_set.npz results/data/{val}/volume.json"
    start = shell(profiles_linked, command.replace("snakemake", f"snakemake {targets}", 1))
    assert start.returncode == 0, start.stdout[-3000:]
    public = np.load(repo / "results/patches/public_set.npz")
    train = np.load(repo / "results/patches/train_set.npz")
    assert public["x"].shape[1:] == train["x"].shape[1:] == (2, 32, 32), "public cohort at the manifest's patch size"
    assert train["x"].shape[0] == 2 * 200 and public["x"].shape[0] == 3 * 200
    info = json.loads((repo / "results/data" / val / "volume.json").read_text())
    assert info["mask_method"].startswith("derived")
