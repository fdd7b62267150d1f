"""Pin the conda envs' pip packages from ``requirements.lock`` (run by ``make lock``).

Each ``envs/*.yaml`` lists its *root* packages (what its rules import, and runtime-only
packages marked ``# runtime-only: <reason>``), then a marker line, then the roots' full
dependency closure. This script owns that closure: it sets every root to its lock version
and rewrites the block after the marker as the closure of the roots, read from the lock's
``# via`` annotations (``uv pip compile --annotation-style line``), at the lock versions.
A conda env then installs exactly the versions the test suite ran with, transitive ones
included; without them pip would take each dependency's newest release at creation time.

torch is not in the lock (the Makefile installs the build for the machine first, see
README): a root ``torch`` keeps the version written in the env file, and its CPU-build
dependencies (``# via torch`` in the lock) join the closure. A CUDA build's own runtime
(nvidia-*, triton) is pinned exactly by that torch release itself.

``python envs/pin_envs.py`` rewrites the env files; ``--check`` only reports (exit 1) which
would change. tests/test_envs.py reads the lock and the env files through this module.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
ENVS = sorted((REPO / "envs").glob("*.yaml"))
# The line that ends an env's roots; everything after it is written by this script.
MARKER = "      # their dependencies, at the requirements.lock versions (written by `make lock`):"
TORCH = "torch"  # installed before the lock (Makefile TORCH_SPEC); not a lock entry
_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*(?:#\s*via\s+(.*))?$")
_PIP_ENTRY = re.compile(r"^      - ([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#]+)(\s+#.*)?$")


def canonical(name: str) -> str:
    """The PEP 503 form of a distribution name (``SPARQLWrapper`` -> ``sparqlwrapper``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Lock:
    versions: dict[str, str]  # canonical name -> version
    requires: dict[str, set[str]]  # canonical name -> what it depends on (lock names, torch)


def read_lock(path: Path = LOCK) -> Lock:
    """Versions and dependency edges of a lock written by ``make lock``."""
    versions: dict[str, str] = {}
    requires: dict[str, set[str]] = {TORCH: set()}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LOCK_LINE.match(line.strip())
        if not match or match.group(3) is None:
            raise ValueError(f"{path.name}:{number}: expected 'name==version  # via ...', got {line!r}")
        name = canonical(match.group(1))
        versions[name] = match.group(2)
        for parent in match.group(3).split(","):
            parent = parent.strip()
            if not parent.startswith("-r "):  # "-r requirements.txt": a direct requirement
                requires.setdefault(canonical(parent), set()).add(name)
    unknown = sorted(set(requires) - set(versions) - {TORCH})
    if unknown:
        raise ValueError(f"{path.name}: 'via' names packages the lock does not pin: {unknown}")
    return Lock(versions, requires)


def closure(roots: set[str], lock: Lock) -> set[str]:
    """The roots and everything they need, transitively (canonical names)."""
    found, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(lock.requires.get(name, ()))
    return found


@dataclass(frozen=True)
class Root:
    spelling: str  # as the env file writes the name
    version: str
    comment: str  # the entry's trailing comment without "#" ("" when none)


def env_roots(text: str, env_name: str) -> dict[str, Root]:
    """canonical name -> the pip entries before the marker line."""
    if MARKER not in text.splitlines():
        raise ValueError(f"{env_name}: no line {MARKER.strip()!r} after its root packages")
    roots = {}
    for line in text.split(MARKER)[0].splitlines():
        match = _PIP_ENTRY.match(line)
        if match:
            comment = (match.group(3) or "").strip().removeprefix("#").strip()
            roots[canonical(match.group(1))] = Root(match.group(1), match.group(2), comment)
    return roots


def env_pins(text: str, env_name: str) -> dict[str, str]:
    """canonical name -> version of every pip entry, roots and closure."""
    if MARKER not in text.splitlines():
        raise ValueError(f"{env_name}: no line {MARKER.strip()!r} after its root packages")
    return {canonical(m.group(1)): m.group(2) for m in map(_PIP_ENTRY.match, text.splitlines()) if m}


def render(text: str, lock: Lock, env_name: str) -> str:
    """The env file with its roots at the lock versions and the closure block rewritten."""
    roots = env_roots(text, env_name)
    head = text.split(MARKER)[0]
    lines = []
    for line in head.splitlines():
        match = _PIP_ENTRY.match(line)
        name = canonical(match.group(1)) if match else None
        if name and name != TORCH:
            if name not in lock.versions:
                raise ValueError(f"{env_name}: {match.group(1)} is not in {LOCK.name} (add it to requirements.txt)")
            line = f"      - {match.group(1)}=={lock.versions[name]}{match.group(3) or ''}"
        lines.append(line)
    needed = sorted(closure(set(roots), lock) - set(roots))
    lines += [MARKER] + [f"      - {name}=={lock.versions[name]}" for name in needed]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python envs/pin_envs.py [--check]", file=sys.stderr)
        return 2
    try:
        lock = read_lock()
        rendered = {env: render(env.read_text(), lock, env.name) for env in ENVS}
    except (OSError, ValueError) as error:
        print(f"envs/pin_envs.py: {error}", file=sys.stderr)
        return 1
    stale = []
    for env, new in rendered.items():
        text = env.read_text()
        if new != text:
            stale.append(env.name)
            if not check:
                env.write_text(new)
    verb = "differ from" if check else "rewritten from"
    print(f"envs: {', '.join(stale) or 'none'} {verb} {LOCK.name}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
