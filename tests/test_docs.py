"""The README fits a screen, opens with the two commands the Makefile runs, and every relative link resolves."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_under_12000_characters():
    size = len(README.read_bytes())
    assert size < 12_000, f"README.md is {size} bytes; move detail into docs/"


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_section = text.split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```", first_section, re.S | re.M)
    assert block, "the README's first section has no ```sh block"
    assert block.start() < 300, "the commands are not at the top"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_two_commands_do_what_the_readme_says():
    makefile = (ROOT / "Makefile").read_text()
    recipes = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+):[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.M)}
    assert "-m distill_assets.run" in recipes["demo"]
    assert "-m pytest" in recipes["test"]
    assert re.search(r"^demo: setup\b", makefile, re.M) and re.search(r"^test: setup\b", makefile, re.M)


def test_relative_links_resolve():
    assert len(PAGES) > 1, "no docs/ pages"
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(README)}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_slugs_follow_github():
    assert slug("Training through Dagster Pipes (`torchrun`, `accelerate launch`)") == (
        "training-through-dagster-pipes-torchrun-accelerate-launch"
    )
    assert slug("Storage: Postgres and an object store") == "storage-postgres-and-an-object-store"
