"""The README stays a front page and the docs stay navigable: size, links and anchors that resolve, module
paths that exist, and no changelog prose (the docs describe the software and what was measured)."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.M)}


def test_readme_is_a_front_page():
    assert (REPO / "README.md").stat().st_size <= 15_000
    text = (REPO / "README.md").read_text()
    assert "docs/images/toy_world_demo.png" in text
    for section in ("Fresh machine", "On a robot", "The ROS 2 node", "The engine", "Figures", "Layout",
                    "Citing and licences"):
        assert re.search(rf"^## {re.escape(section)}", text, re.M), section


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(link)
    assert not broken, broken


def _module_exists(dotted: str) -> bool:
    """`ovss_ros.a.b.name`: some leading part past the package is a module or package of this repository
    (the rest may be a name inside it)."""
    parts = dotted.split(".")
    for n in range(len(parts), 1, -1):
        base = REPO.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_package_files_exist(page):
    text = page.read_text()
    missing = [f for f in re.findall(r"`(ovss_ros/[\w/]+\.py)`", text) if not (REPO / f).is_file()]
    missing += [m for m in re.findall(r"`(ovss_ros(?:\.\w+)+)", text) if not _module_exists(m)]
    assert not missing, missing


HISTORY = re.compile(r"issue's target|the issue\b|issue #\d|\bsession\b|before (this|the) (fix|work)\b|"
                     r"the code before|was fixed|previously|no longer|this work|last session", re.I)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_changelog_prose(page):
    hits = [line for line in page.read_text().splitlines() if HISTORY.search(line)]
    assert not hits, hits
