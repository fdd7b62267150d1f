"""Drive the real workflow through Snakemake's Python API (dry-runs and local runs)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, DAGSettings, ExecutionSettings, OutputSettings, ResourceSettings

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
CONFIG_FILES = [REPO / "config" / "config.yaml", REPO / "config" / "domains.yaml"]


def load_config() -> dict[str, Any]:
    """config.yaml + domains.yaml as the workflow loads them (before schema defaults)."""
    config: dict[str, Any] = {}
    for path in CONFIG_FILES:
        config.update(yaml.safe_load(path.read_text()) or {})
    return config


def write_override(workdir: Path, override: dict[str, Any], name: str = "override.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(override))
    return path


def api_run(
    workdir: Path,
    targets: list[str],
    executor: str,
    configfiles: list[Path],
    snakefile: Path = SNAKEFILE,
    cores: int = 1,
    forceall: bool = False,
    forcerun: list[str] = (),
    quiet: bool | None = None,
) -> Any:
    """Run ``snakefile`` through Snakemake's API with ``executor`` (dryrun, local, touch);
    returns the DAG. Quiet by default unless jobs really run."""
    quiet = executor != "local" if quiet is None else quiet
    api = SnakemakeApi(OutputSettings(quiet={Quietness.ALL} if quiet else None, show_failed_logs=True))
    with api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=cores),
            config_settings=ConfigSettings(configfiles=list(configfiles)),
            snakefile=snakefile,
            workdir=workdir,
        )
        dag = workflow.dag(DAGSettings(targets=list(targets), forceall=forceall, forcerun=list(forcerun)))
        dag.execute_workflow(executor=executor, execution_settings=ExecutionSettings())
        return dag.workflow_api._workflow.dag


def jobs_of(dag: Any) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job the executor ran (a dry-run "finishes" exactly the jobs a
    real run would execute)."""
    return sorted(((job.rule.name, dict(job.wildcards)) for job in dag.finished_jobs), key=repr)


def planned_jobs(
    workdir: Path, targets: list[str] | None = None, overrides: list[Path] = (), forceall: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry-run would execute."""
    return jobs_of(api_run(workdir, list(targets or []), "dryrun", [*CONFIG_FILES, *overrides], forceall=forceall))


def snakemake_command(
    workdir: Path,
    targets: Sequence[str],
    configfiles: Sequence[Path],
    snakefile: Path | None = None,
    cores: int = 1,
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m snakemake`` in a fresh process: a test's own Snakefile (default
    ``workdir/Snakefile``, e.g. the real rule files included) or the real one."""
    snakefile = snakefile or workdir / "Snakefile"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir)]
    command += ["--configfile", *map(str, configfiles), "--cores", str(cores), "--nolock", *extra]
    return [*command, "--", *targets]


def run_snakemake(workdir: Path, *args: Any, timeout: int = 900, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command` in ``workdir``; output captured as text."""
    command = snakemake_command(workdir, *args, **kwargs)
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def run_workflow(workdir: Path, targets: list[str] | None = None, overrides: list[Path] = (), cores: int = 2) -> None:
    api_run(workdir, list(targets or []), "local", [*CONFIG_FILES, *overrides], cores=cores)


# Where each file role of the shipped dbbook/lastfm/ml1m specs lies in the original study's
# folder (../shared/data/rekalm-original/<folder>/), for extra config files that point the
# workflow at local copies instead of the URLs.
ORIGINAL_FILES = {
    "dbbook": (
        "dbbook",
        {
            "train": "user-item/train.tsv",
            "test": "user-item/test.tsv",
            "names": "entities_names.json",
            "mapping": "mapping_entities.tsv",
            "item_props": "item-prop/train.tsv",
            "relations": "mapping_relations.tsv",
            "entities": "mapping_entities.tsv",
        },
    ),
    "lastfm": (
        "lastfm",
        {
            "train": "user-item/train.tsv",
            "test": "user-item/test.tsv",
            "names": "entities_names.json",
            "item_names": "mapping_items.tsv",
            "item_props": "item-prop/train.tsv",
            "relations": "mapping_relations.tsv",
            "entities": "mapping_props.tsv",
        },
    ),
    "ml1m": (
        "movielens",
        {
            "dbpedia_mapping": "MappingMovielens2DBpedia-1.2.tsv",
            "item_props": "item-prop/train.tsv",
            "relations": "mapping_relations.tsv",
            "entities": "mapping_entities.tsv",
            "names": "entities_names.json",
        },
    ),
}


def local_original_files(data_dir: Path, dataset: str) -> dict[str, dict[str, str]]:
    """role -> {path: local copy}: the override a user who downloaded the files writes."""
    folder, roles = ORIGINAL_FILES[dataset]
    return {role: {"path": str(data_dir / folder / relative)} for role, relative in roles.items()}
