"""Every relative link in README.md and docs/*.md leads somewhere: the file exists, and an anchor
(`file.md#heading`) names one of its headings, as GitHub makes their anchors."""
import re
from pathlib import Path

from tests.server_harness import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation (backticks too) dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_every_relative_link_resolves():
    assert len(pages()) > 5
    problems = {page.relative_to(ROOT).as_posix(): broken_links(page) for page in pages()}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_the_check_sees_broken_links(tmp_path):
    (tmp_path / "there.md").write_text("# A heading's text\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-headings-text) ![pic](missing.png) [x](there.md#not-a-heading)\n"
                    "[web](https://example.com) `[code](nowhere.md)`\n")
    assert broken_links(page) == ["missing.png: no such file", "there.md#not-a-heading: no heading with that anchor"]
