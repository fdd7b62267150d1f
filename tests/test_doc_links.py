"""The docs point at things that exist: every relative link and ``#anchor`` in README.md,
config/README.md, CHANGELOG.md and docs/*.md resolves, and every repository path and
``rekalm`` module they name in inline code is there.

Release 0.2.0 split the README into docs/ pages and moved every module into a family
subpackage, so a link to a section that moved, or a path written before the move, would
otherwise stay wrong unnoticed. Commands in code blocks are checked by
tests/test_documented_commands.py (they are dry-run); this file reads prose only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rekalm.moved_modules import MOVED

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    REPO / "README.md",
    REPO / "config" / "README.md",
    REPO / "CHANGELOG.md",
    *sorted((REPO / "docs").glob("*.md")),
]
# Top-level folders whose paths the docs name in inline code (results/ and logs/ are made by a run).
REPOSITORY_FOLDERS = (
    "benchmarks",
    "config",
    "docs",
    "envs",
    "profiles",
    "rekalm",
    "rules",
    "tests",
    "workflow_scripts",
)

# Paths the docs name that a user's action makes, not the checkout.
MADE_BY_USE = {"envs/llm.sif": "apptainer build writes it", "benchmarks/out/": "the benchmarks write there"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)")
_PATH = re.compile(rf"^(?:{'|'.join(REPOSITORY_FOLDERS)})/[\w./-]*$")
_MODULE = re.compile(r"^rekalm(?:\.\w+)+$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lower case, spaces to
    hyphens (underscores and hyphens kept)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """The anchors of every heading of ``document`` (repeats numbered as GitHub does)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(document.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading[1])
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return found


def where(document: Path, number: int) -> str:
    """``path:line`` of a document, relative to the checkout when it is in it."""
    name = document.relative_to(REPO) if document.is_relative_to(REPO) else document.name
    return f"{name}:{number}"


def link_errors(document: Path) -> list[str]:
    """Every relative link of ``document`` whose file or anchor does not exist."""
    errors = []
    for number, line in prose_lines(document.read_text(encoding="utf-8")):
        for target in _LINK.findall(_CODE_SPAN.sub("``", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked here
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                errors.append(f"{where(document, number)}: {target}: no such file")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                errors.append(f"{where(document, number)}: {target}: no heading with that anchor in {linked.name}")
    return errors


def defined_names(path: Path) -> set[str]:
    """The names a module binds at its top level (defined, assigned or imported)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def module_exists(dotted: str) -> bool:
    """``rekalm.a.b`` names a package or module of the checkout, or a name a package's
    ``__init__`` binds; after a module, any attribute is accepted."""
    folder = REPO / "rekalm"
    for part in dotted.split(".")[1:]:
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
        else:
            return (folder / f"{part}.py").is_file() or part in defined_names(folder / "__init__.py")
    return True


def naming_errors(document: Path) -> list[str]:
    """Repository paths and rekalm modules named in inline code that do not exist. Only
    CHANGELOG.md may name the 0.1.0 flat module paths (it says they are deprecated)."""
    errors = []
    old_paths_allowed = document.name == "CHANGELOG.md"
    for number, line in prose_lines(document.read_text(encoding="utf-8")):
        for span in _CODE_SPAN.findall(line):
            for word in span.split():
                word = word.rstrip(".,;:)")
                if re.search(r"[<>*{}$]", word):  # placeholders and patterns name no one path
                    continue
                if _PATH.match(word) and word not in MADE_BY_USE and not (REPO / word).exists():
                    errors.append(f"{where(document, number)}: no such path {word}")
                elif _MODULE.match(word) and not module_exists(word):
                    if not (old_paths_allowed and word.split(".")[1] in MOVED):
                        errors.append(f"{where(document, number)}: no such module {word}")
    return errors


def test_the_docs_are_all_checked() -> None:
    names = {str(document.relative_to(REPO)) for document in DOCUMENTS}
    assert {"README.md", "docs/stages.md", "docs/hpc.md", "CHANGELOG.md"} <= names
    assert all(document.is_file() for document in DOCUMENTS)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: str(document.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(document: Path) -> None:
    errors = link_errors(document)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: str(document.relative_to(REPO)))
def test_every_path_and_module_named_in_code_exists(document: Path) -> None:
    errors = naming_errors(document)
    assert not errors, "\n".join(errors)


def test_the_checks_find_what_they_are_for(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## The lock: `requirements.txt` -> `requirements.lock`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Twice\n\n## Twice\n\n"
        "[ok](other.md#the-lock-requirementstxt---requirementslock), [same page](#twice-1), "
        "[web](https://example.org/#x), `[not a link](nowhere.md)`\n"
        "[gone](missing.md) [bad anchor](other.md#lock) [bad here](#twice-2)\n"
        "```bash\n# a comment, not a heading\n[in code](missing-too.md)\n```\n"
        "`rekalm/data/split.py`, `rekalm.data.split.SplitSettings`, `tests/<family>/`\n"
        "`rekalm.__version__`, `rekalm/split.py` and `rekalm.split` and `rekalm.data.split_interactions` "
        "and `benchmarks/nope.py --flag`\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"page", "twice", "twice-1"}
    assert [error.split(": ", 1)[1] for error in link_errors(page)] == [
        "missing.md: no such file",
        "other.md#lock: no heading with that anchor in other.md",
        "#twice-2: no heading with that anchor in page.md",
    ]
    # paths and modules are looked up in the checkout, wherever the page is
    assert [error.split(": ", 1)[1] for error in naming_errors(page)] == [
        "no such path rekalm/split.py",
        "no such module rekalm.split",
        "no such module rekalm.data.split_interactions",
        "no such path benchmarks/nope.py",
    ]
