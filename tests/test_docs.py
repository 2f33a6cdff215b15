"""The documentation holds together: a short README that says the first commands, and links that lead somewhere.

Relative links (markdown `[text](path)` and images `![alt](path)`, with an optional `#anchor`) in README.md,
docs/*.md, config/README.md and benchmarks/README.md must name an existing file, and an anchor must name a heading
of the target markdown file by GitHub's rule. Links to the web and into results/ (made by a run) are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted({README, *(ROOT / "docs").glob("*.md"), ROOT / "config" / "README.md", ROOT / "benchmarks" / "README.md"})

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, CODE_SPAN.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but - and _ removed, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    text = page.read_text()
    lines = text.splitlines()
    for number, _ in prose_lines(text):
        match = HEADING.match(lines[number - 1])  # the heading as written: GitHub keeps code spans' text
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in a page's prose; a link's text may span lines."""
    kept = dict(prose_lines(page.read_text()))
    total = len(page.read_text().splitlines())
    prose = "\n".join(kept.get(number, "") for number in range(1, total + 1))
    return [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(prose)]


def test_the_slug_follows_github():
    assert slug("Privacy: what epsilon means here") == "privacy-what-epsilon-means-here"
    assert slug("The DP audit: does the mechanism deliver its epsilon?") == "the-dp-audit-does-the-mechanism-deliver-its-epsilon"
    assert slug("3. Code layering") == "3-code-layering"
    assert slug("`gan_pretrain` and `data`") == "gan_pretrain-and-data"
    assert slug("What comes out, and where to look first") == "what-comes-out-and-where-to-look-first"


def test_anchors_keep_code_in_headings_and_skip_code_blocks(tmp_path):
    page = tmp_path / "page.md"
    heading = "## Private recipes (`sweep_private.py`)\n"
    page.write_text(heading + "```\n# not a heading\n```\n" + heading)
    assert anchors(page) == {"private-recipes-sweep_privatepy", "private-recipes-sweep_privatepy-1"}


def test_readme_is_an_entrance():
    lines = README.read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize(
    "words",
    ["make demo", "make test", "source .venv/bin/activate", "make profiles", "snakemake --profile slurm",
     "--configfile my.yaml"],
)
def test_readme_says_the_first_commands(words):
    assert words in README.read_text()


def test_the_pages_exist():
    for name in ("outputs", "privacy", "results", "own-data", "cluster", "usage", "design"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
    assert (ROOT / "config" / "README.md").is_file()


def test_readme_links_every_page():
    targets = {target.split("#")[0] for _, target in links(README)}
    for page in PAGES:
        if page != README:
            assert str(page.relative_to(ROOT)) in targets, f"README.md does not link {page.relative_to(ROOT)}"


def test_the_readme_picture_is_there():
    targets = [target for _, target in links(README) if target.endswith(".png")]
    assert "docs/images/privacy_utility.png" in targets
    assert (ROOT / "docs/images/privacy_utility.png").is_file(), "copy the demo's results/figures/privacy_utility.png"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http(s), mailto and the like
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if path and (ROOT / "results") in (page.parent / path).resolve().parents:
            continue  # made by a run
        if not file.exists():
            broken.append(f"{where}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{where}: no heading with that anchor in {file.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_config_readme_names_every_schema_key():
    """config/README.md has a row for every key of workflow/schemas/config.schema.yaml (a new key needs its row)."""
    import yaml

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    keys: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for name, sub in node.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub and name != "splits":
                walk(sub, f"{prefix}{name}.")
            else:
                keys.append(prefix + name)

    walk(schema, "")
    text = (ROOT / "config" / "README.md").read_text()
    missing = [key for key in keys if f"`{key}`" not in text]
    assert keys and not missing, f"config/README.md lacks {missing}"
