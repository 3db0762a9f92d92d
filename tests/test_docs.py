"""The README stays a front door that works, and no link in the docs leads nowhere.

README.md: one page (under 150 lines) opening with `make demo` and `make test`; every `make` target it
names exists in the Makefile; every repository path it names (files, playbooks, folders) exists.
README.md and docs/*.md: every relative link resolves to a file, and its `#anchor` to a heading there
(GitHub's heading slugs); every `make` target named exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
MAKE = re.compile(r"(?:^|[\s(])make ([a-z][a-z-]*)")
# A token that names a repository path: word characters, dots and dashes, separated by slashes.
PATHISH = re.compile(r"^\.?[\w-]+(?:\.[\w-]+)*(?:/[\w.-]+)*/?$")


def tracked_top_level() -> set[str]:
    """The top-level names git tracks: a path starting with one of them must exist."""
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {line.split("/", 1)[0] for line in out.splitlines() if line}


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def named_make_targets(text: str) -> set[str]:
    """`make X` in code spans and code blocks (prose may say "make sure")."""
    code = [*CODE_SPAN.findall(FENCE.sub("", text)), *FENCE.findall(text)]
    return {name for snippet in code for name in MAKE.findall(snippet)}


def test_readme_is_one_page_opening_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines; move detail into docs/"
    head = "\n".join(lines[:40])
    assert "make demo" in head
    assert "make test" in head


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_make_targets_named_exist(page: Path) -> None:
    missing = named_make_targets(page.read_text()) - make_targets()
    assert not missing, f"{page.name} names make targets the Makefile lacks: {sorted(missing)}"


def test_readme_paths_exist() -> None:
    text = README.read_text()
    tokens = set(CODE_SPAN.findall(text))
    for block in FENCE.findall(text):
        tokens.update(block.split())
    top = tracked_top_level()
    checked, missing = 0, []
    for token in tokens:
        token = token.strip("`'\",;:()")
        if not PATHISH.match(token) or ("/" not in token and not token.endswith((".yml", ".md", ".txt"))):
            continue
        if token.split("/", 1)[0] not in top:
            continue  # not a repository path (a URL part, a runtime directory, a placeholder)
        checked += 1
        if not (REPO / token).exists():
            missing.append(token)
    assert checked >= 10, "the README should name the repository's entry points"
    assert not missing, f"README.md names paths that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_code_blocks_are_closed(page: Path) -> None:
    fences = re.findall(r"^```", page.read_text(), re.M)
    assert len(fences) % 2 == 0, f"{page.relative_to(REPO)}: a code block is not closed"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.relative_to(REPO)})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_slug_matches_github() -> None:
    assert slug("Port forward (open the dashboard)") == "port-forward-open-the-dashboard"
    assert slug("Pinning the hosts' AMI") == "pinning-the-hosts-ami"
    assert slug("The demo, step by step") == "the-demo-step-by-step"
    assert slug("`make demo`: what it shows") == "make-demo-what-it-shows"
