"""The package's layers: every dpmra import points down, no stage imports another, long modules say why.

Each subpackage of workflow/dpmra/ is one layer; the order below is the only place it is spelt (docs/design.md,
section 3, describes it). A module may import its own layer and any layer listed before it. Layers that share a
row are peers: neither imports the other (two stages side by side). The package root holds only `__version__`
and may be imported from anywhere. Every `import` and `from ... import` counts, also those inside functions
(the command line imports its stages lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "workflow" / "dpmra"
LAYERS = [
    ("shared",),  # atomic writes, checkpoint files, devices, pictures, HTML tables
    ("data", "features"),  # the data stage; image features (below release, which chooses epochs by them)
    ("privacy",),  # DP-SGD engine, accountants, run planning, secret key, the DP audit's canaries and statistics
    ("generators", "segmentation"),  # GAN families and their interface; U-Net, its training, prediction, metrics
    ("release",),  # synthetic datasets, privacy cards, bundles
    ("evaluation",),  # tables, quality, memorisation check, the DP audit run, figures
    ("cli",),  # dpmra.cli and dpmra.__main__
]
RANK = {layer: rank for rank, row in enumerate(LAYERS) for layer in row}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name (`dpmra.data.patches` -> data); None for the package root."""
    parts = module.split(".")
    if parts == ["dpmra"]:
        return None
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1]


def module_name(path: Path) -> str:
    """`dpmra.data.patches` for workflow/dpmra/data/patches.py, `dpmra.data` for its __init__.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted dpmra module) of every import in a module's source, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                name = ".".join(base + ([name] if name else []))
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "dpmra" or name.startswith("dpmra.")]


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import that points up or sideways: `module:line imports target (layer -> layer)`."""
    problems = []
    for module, (source, is_package) in sorted(sources.items()):
        own = layer_of(module)
        if module == "dpmra":
            problems += [f"{module}:{line} imports {target}: the root imports nothing"
                         for line, target in imported(module, source, is_package)]
            continue
        if own not in RANK:
            problems.append(f"{module}: in no layer (add its subpackage to LAYERS)")
            continue
        for line, target in imported(module, source, is_package):
            theirs = layer_of(target)
            if theirs is None or theirs == own:
                continue
            if theirs not in RANK:
                problems.append(f"{module}:{line} imports {target}, which is in no layer")
            elif RANK[theirs] > RANK[own]:
                problems.append(f"{module}:{line} imports {target} ({own} -> {theirs}: upward)")
            elif RANK[theirs] == RANK[own]:
                problems.append(f"{module}:{line} imports {target} ({own} -> {theirs}: a peer stage)")
    return problems


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path): (path.read_text(), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_import_points_down_and_no_stage_imports_a_peer():
    sources = package_sources()
    assert len(sources) > 40  # the whole package was read
    assert violations(sources) == []


def test_every_subpackage_is_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(RANK) - {"cli"}
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "__main__.py", "cli.py"}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("dpmra.data.patches", "from dpmra.release.synth import to_dataset", "(data -> release: upward)"),
        (
            "dpmra.segmentation.predict",
            "def f():\n    from dpmra.generators import wgan",
            "(segmentation -> generators: a peer stage)",
        ),
        ("dpmra.data.patches", "from ..features import extract", "(data -> features: a peer stage)"),
        ("dpmra.privacy.dpsgd", "import dpmra.evaluation.tables", "(privacy -> evaluation: upward)"),
        ("dpmra.evaluation.quality", "from dpmra.features.extract import frechet_distance", None),
        ("dpmra.cli", "from dpmra.evaluation.figures.pages import write_table1_html", None),
    ],
)
def test_an_upward_or_sideways_import_is_caught(module, source, expected):
    found = violations({module: (source, False)})
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].endswith(expected), found


LONG = 400
"""Lines above which a module says in its docstring why it stays in one file ("... on purpose: ...")."""


def test_a_long_module_says_why_it_is_one_file():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > LONG:
            assert "on purpose" in (ast.get_docstring(ast.parse(source)) or ""), path
