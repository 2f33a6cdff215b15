"""The conda environments (envs/*.yaml, for `--software-deployment-method conda`) match pyproject and the rules.

No conda here: the tests check what can go wrong without one. Every pin lies within pyproject.toml's bounds,
the two environments agree on shared packages, pip resolves each environment's pins together against the
package registry (only where CI asks, with DPMRA_CHECK_REGISTRY=1 as `.ci/run` sets it, so the suite passes on a
machine without network), every rule names an environment, and the light environment can run its rules' commands
without torch.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import ENV, ROOT
from packaging.requirements import Requirement

from dpmra.cli import build_parser

ENVS = {name: ROOT / "envs" / f"{name}.yaml" for name in ("base", "torch")}
TORCH_ONLY = {"torch", "opacus"}
# Runtime requirements the environments need not pin: the workflow engine runs outside them.
ENGINE = {"snakemake", "pygments"}
# Python prelude that makes `import torch` (and opacus) fail, as in the light environment.
WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "opacus"):
            raise ImportError(f"{name} is not in the light environment")

sys.meta_path.insert(0, NoTorch())
"""


def pins(name: str) -> dict[str, str]:
    """{package: version} of an environment's pip section (every entry must be `name==version`)."""
    spec = yaml.safe_load(ENVS[name].read_text())
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))
    out = {}
    for line in pip:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{ENVS[name]}: {line} is not an exact pin"
        out[requirement.name.lower()] = specifier.version
    return out


def project_requirements() -> dict[str, Requirement]:
    """pyproject.toml's runtime requirements by lower-case name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name.lower(): Requirement(line) for line in project["dependencies"]}


def rule_environments() -> dict[str, tuple[str, str]]:
    """{rule: (environment name, dpmra subcommand)} read from workflow/rules/*.smk."""
    rules = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S):
            env = re.search(r'conda:\n\s+"\.\./\.\./envs/(\w+)\.yaml"', match.group(2))
            command = re.search(r'"dpmra ([\w-]+)', match.group(2))
            assert env and command, f"{path}: rule {match.group(1)} lacks a conda environment or a dpmra command"
            rules[match.group(1)] = (env.group(1), command.group(1))
    return rules


def test_pins_lie_within_pyproject_bounds() -> None:
    required = project_requirements()
    for name in ENVS:
        pinned = pins(name)
        for package, version in pinned.items():
            assert package in required, f"{ENVS[name]}: {package} is not a dpmra requirement"
            assert required[package].specifier.contains(version), f"{ENVS[name]}: {package}=={version}"
        expected = set(required) - ENGINE - (TORCH_ONLY if name == "base" else set())
        assert set(pinned) == expected, ENVS[name]


def test_environments_agree_on_shared_packages() -> None:
    base, torch_env = pins("base"), pins("torch")
    assert {k: torch_env[k] for k in base} == base


@pytest.mark.skipif(
    os.environ.get("DPMRA_CHECK_REGISTRY") != "1", reason="asks the package registry; set DPMRA_CHECK_REGISTRY=1 (CI does)"
)
@pytest.mark.parametrize("name", list(ENVS))
def test_pip_resolves_each_environment(name: str, tmp_path) -> None:
    """The pins install together (pip's resolver, dry run: nothing is installed)."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(f"{k}=={v}" for k, v in pins(name).items()) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "-r", str(requirements)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_every_rule_names_an_environment_that_can_run_its_command() -> None:
    """Rules in the light environment run commands whose modules import without torch."""
    rules = rule_environments()
    assert {env for env, _ in rules.values()} == set(ENVS)
    commands = build_parser()._subparsers._group_actions[0].choices
    light = {command for env, command in rules.values() if env == "base"}
    modules = set()
    for command in light:
        source = inspect.getsource(commands[command].get_default("func"))
        modules |= set(re.findall(r"from (dpmra(?:\.\w+)*) import", source))
    imports = "\n".join(f"import {m}" for m in sorted(modules))
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + imports], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, f"{sorted(modules)} need torch:\n{result.stdout[-2000:]}"
    assert {"gan", "unet", "predict", "synth", "quality"} <= {r for r, (env, _) in rules.items() if env == "torch"}
