"""Where a shell finds things: `dpmra` for every job's command line, and the Snakemake profiles by name.

Every rule's shell line calls `dpmra`. A run started as `.venv/bin/snakemake` (not activated) has the venv's
Python but not its `bin/` on PATH; local jobs and SLURM jobs inherit the submitting process's environment, so
putting the interpreter's scripts folder first on PATH once, at parse time, serves them all.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

COMMAND = "dpmra"


class SetupError(ValueError):
    """The environment cannot run the workflow; the message says what to type."""


def scripts_folder() -> Path:
    """The folder where this interpreter's console scripts live (a venv's bin/)."""
    return Path(sysconfig.get_path("scripts"))


def path_with_dpmra(path: str, scripts: Path | None = None) -> str:
    """PATH with this interpreter's scripts folder first when `dpmra` is installed there; unchanged otherwise."""
    scripts = scripts or scripts_folder()
    if not (scripts / COMMAND).is_file():
        return path
    rest = [entry for entry in path.split(os.pathsep) if entry and Path(entry) != scripts]
    return os.pathsep.join([str(scripts), *rest])


def require_dpmra(path: str) -> None:
    """Stop before any job when no `dpmra` command is on `path`, saying how to install or activate it."""
    if shutil.which(COMMAND, path=path) is None:
        raise SetupError(
            f"`{COMMAND}` is not on PATH and not installed next to this Python ({scripts_folder()}); every job "
            "runs it. Install the package into the environment that runs Snakemake (`make install`, or "
            "`pip install -e .` in the repository), then `source .venv/bin/activate` before `snakemake`."
        )


def use_this_environment(check: bool = True) -> None:
    """Put this Python's scripts folder first on this process's PATH (jobs inherit it); with `check`, stop when no
    `dpmra` is on it (not with conda, where every job's environment brings its own)."""
    os.environ["PATH"] = path_with_dpmra(os.environ.get("PATH", ""))
    if check:
        require_dpmra(os.environ["PATH"])


def snakemake_profile_folder() -> Path:
    """The user folder where `snakemake --profile NAME` looks for NAME (Snakemake's own rule, XDG aware)."""
    from snakemake.common import get_appdirs

    return Path(get_appdirs().user_config_dir)


def link_profiles(profiles: Path, folder: Path) -> list[tuple[Path, Path]]:
    """Link each profile folder under `profiles` into `folder` by its name; refuse to replace a foreign one.

    Returns (link, target) pairs. A link that already points to the same profile is kept as it is.
    """
    sources = sorted(p.resolve() for p in Path(profiles).iterdir() if (p / "config.yaml").is_file())
    if not sources:
        raise SetupError(f"{profiles}: no profile folder (a folder holding config.yaml)")
    clashes = [folder / s.name for s in sources if _foreign(folder / s.name, s)]
    if clashes:
        raise SetupError(
            f"{', '.join(map(str, clashes))} already exist(s) and are not this workflow's profiles; remove or "
            "rename them, or give the profile by path instead (`snakemake --profile profiles/slurm`)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for source in sources:
        link = folder / source.name
        if not link.is_symlink():
            link.symlink_to(source, target_is_directory=True)
        links.append((link, source))
    return links


def _foreign(link: Path, source: Path) -> bool:
    """Whether `link` exists and is something other than a link to `source`."""
    if not (link.exists() or link.is_symlink()):
        return False
    return not (link.is_symlink() and link.resolve() == source)
