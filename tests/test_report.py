"""The Snakemake HTML report of the tiny run, opened in headless Chromium: a person sees every figure and table.

What the report must list is derived from the workflow itself: every `report(...)` output declared in the rule
files must appear in the report (and nothing else), and the figures and tables issue 6 asks for must be among them.
The report is a JavaScript app, so the check drives it in the browser: a probe script appended to a copy of the
report walks every category and subcategory, opens each result's information panel, and writes what was rendered
into the DOM, which Chromium dumps; a screenshot shows Fig. 3 as a reader would open it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from conftest import ROOT, snakemake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.workflow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package: chromium)"),
]

# The items issue 6 requires for the tiny config (it has test and external patients).
REQUIRED = [
    *(
        f"results/figures/{name}.png"
        for name in (
            "fig2_samples",
            "fig3_test_utility",
            "fig4_error_maps",
            "fig5_external_utility",
            "fig6_fid",
            "fig7_segmentation",
            "fig8_ssim",
            "fig9_tsne",
            "privacy_utility",
            "audit",
            "gan_curves",
        )
    ),
    *(f"results/tables/{name}.html" for name in ("table1", "summary", "quality", "audit", "privacy")),
]
# Patient data (real pixels, un-noised statistics of training patients) sit in one category of their own.
CATEGORIES = {"GAN", "Synthetic data", "Privacy", "Contains patient data"}
SHOWN = "results/figures/fig3_test_utility.png"

PROBE = """
<script>
window.addEventListener("load", function () {
  // Drive the report app synchronously (flushSync renders each view at once), so no timers are needed.
  const sync = (f) => ReactDOM.flushSync(f);
  if (typeof app === "undefined") sync(() => root.render(e(App)));
  const found = {subcategories: {}, info: {}};
  for (const cat in categories) {
    for (const sub in categories[cat]) {
      sync(() => app.setView({navbarMode: "menu"}));
      sync(() => app.setView({navbarMode: "subcategory", category: cat, subcategory: sub}));
      found.subcategories[cat + " / " + sub] =
        Array.from(document.querySelectorAll("tbody tr")).map(tr => tr.innerText.trim());
    }
  }
  for (const path in results) {
    sync(() => app.showResultInfo(path));
    found.info[path] = document.body.innerText;
  }
  const pre = document.createElement("pre");
  pre.id = "dpmra-probe";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(found);
  document.body.appendChild(pre);
  const [cat, sub] = SHOWN_PLACE;
  sync(() => app.setView({navbarMode: "menu"}));
  sync(() => app.setView({navbarMode: "subcategory", category: cat, subcategory: sub, content: "img",
                          contentPath: results[SHOWN].data_uri, resultPath: SHOWN}));
});
</script>
"""


def declared_report_patterns() -> list[str]:
    """Paths of every report() output declared in the rule files, wildcards and f-string fields as `{}`."""
    patterns = []
    for rules in sorted((ROOT / "workflow/rules").glob("*.smk")):
        for match in re.finditer(r'report\(\s*f?"([^"]+)"', rules.read_text()):
            patterns.append(re.sub(r"\{\{?[^{}]+\}?\}", "{}", match[1]))
    return patterns


def matches(pattern: str, path: str) -> bool:
    """Whether a report path is an instance of a declared pattern (a field stands for one path component or part)."""
    regex = "".join("[^/]+" if part == "{}" else re.escape(part) for part in re.split(r"(\{\})", pattern))
    return re.fullmatch(regex, path) is not None


def report_variable(page: str, name: str) -> dict:
    """A JSON variable the report embeds in a <script> (results, categories)."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', page, flags=re.DOTALL)
    assert match, f"report has no `var {name}`"
    return json.loads(match[1])


def visible_rows(results: dict, paths: list[str]) -> set[tuple[str, ...]]:
    """The rows Snakemake's report app shows for a subcategory (labels, one toggle label folded, or the paths)."""
    labels = [results[p]["labels"] for p in paths]
    if not all(labels):
        return {(p,) for p in paths}
    names = list(dict.fromkeys(k for item in labels for k in item))
    toggles = []
    for name in names[1:]:
        values = [item[name] for item in labels if name in item]
        if len(set(values)) == 2 and all(2 * values.count(v) == len(paths) for v in set(values)):
            toggles.append(name)
    shown = [n for n in names if len(toggles) != 1 or n != toggles[0]]
    return {tuple(item.get(n, "") for n in shown) for item in labels}


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run headless Chromium once (own profile directory, no sandbox: tests may run as root)."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={cwd / 'chromium-profile'}",
            "--virtual-time-budget=5000",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def report(tiny_run: Path) -> Path:
    """results/report.html of the tiny run, built by `snakemake --report`."""
    workdir = tiny_run.parent
    result = snakemake(workdir, "--report", "results/report.html", "--configfile", str(ROOT / "config/test.yaml"))
    assert result.returncode == 0, result.stdout[-5000:]
    return workdir / "results/report.html"


@pytest.fixture(scope="module")
def rendered(report: Path) -> tuple[dict, dict, dict, Path]:
    """The report's results and categories, what the browser rendered, and a screenshot of Fig. 3 opened."""
    page = report.read_text()
    results, categories = report_variable(page, "results"), report_variable(page, "categories")
    place = next([c, s] for c, subs in categories.items() for s, paths in subs.items() if SHOWN in paths)
    probe = PROBE.replace("SHOWN_PLACE", json.dumps(place)).replace("SHOWN", json.dumps(SHOWN))
    probe_page = report.with_name("report_probe.html")
    end = page.rindex("</body>")  # the last one: vendored scripts hold the string too
    probe_page.write_text(page[:end] + probe + page[end:])
    dom = chromium("--dump-dom", probe_page.as_uri(), cwd=report.parent)
    match = re.search(r'<pre id="dpmra-probe"[^>]*>(.*?)</pre>', dom.stdout, flags=re.DOTALL)
    assert match, f"the probe did not finish in Chromium: {dom.stderr[-3000:]}"
    screenshot = report.with_name("report_screenshot.png")
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1600,1000", probe_page.as_uri(), cwd=report.parent)
    assert screenshot.exists(), shot.stderr[-3000:]
    return results, categories, json.loads(html.unescape(match[1])), screenshot


def test_report_holds_every_declared_item_and_the_required_ones(rendered):
    results, categories, _, _ = rendered
    patterns = declared_report_patterns()
    assert not [p for p in results if not any(matches(q, p) for q in patterns)], "undeclared report items"
    missing = [q for q in patterns if not any(matches(q, p) for p in results)]
    assert not missing, f"report() outputs the default targets do not build: {missing}"
    assert not [r for r in REQUIRED if r not in results], "figures or tables of issue 6 missing from the report"
    assert CATEGORIES <= set(categories)


def test_every_item_is_listed_in_its_subcategory(rendered):
    results, categories, found, _ = rendered
    for category, subcategories in categories.items():
        for subcategory, paths in subcategories.items():
            rows = found["subcategories"][f"{category} / {subcategory}"]
            expected = visible_rows(results, paths)
            toggled = 2 if len(expected) < len(paths) else 1
            assert len(expected) * toggled == len(paths), f"{category} / {subcategory}: items share their labels"
            assert sorted(tuple(r.split("\t")) for r in rows) == sorted(expected), f"{category} / {subcategory}"


def test_every_item_shows_its_caption(rendered):
    results, _, found, _ = rendered
    for path, entry in results.items():
        caption = " ".join(re.sub(r"<[^>]+>", " ", html.unescape(entry["caption"] or "")).split())
        assert len(caption) > 40 and "{{" not in caption, f"{path}: no caption"
        assert " ".join(caption.split()[:6]) in " ".join(found["info"][path].split()), f"{path}: caption not shown"


def test_screenshot_shows_a_figure(rendered):
    _, _, _, screenshot = rendered
    pixels = imread(screenshot)
    assert pixels.shape[:2] == (1000, 1600)
    content = pixels[:, 600:, :3]  # right of the navigation bar: the opened figure on white
    ink = (content < 0.8).any(axis=-1).mean()
    assert 0.01 < ink < 0.5, f"the opened figure is not visible in {screenshot} ({ink:.1%} non-white)"
