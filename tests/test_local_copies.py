"""Local copies of a dataset's files: an extra config file (or --config) adds `path:` to a
file spec that ships with a `url:`; the path wins, the sha256 is still checked, and bad
paths stop the workflow when it starts, before any job."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from snakemake_helpers import CONFIG_FILES, api_run, local_original_files, planned_jobs, write_override
from snakemake_helpers import load_config as shipped_config

from rekalm.config import ConfigError, check_config, resolve_local_copies

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def test_path_wins_over_url_and_keeps_the_checksum(tmp_path):
    config = shipped_config()
    local = tmp_path / "train.tsv"
    local.write_text("1\t2\t1\n")
    config["datasets"]["dbbook"]["files"]["train"]["path"] = str(local)
    config["run"]["datasets"] = ["dbbook"]
    changes = resolve_local_copies(config)
    spec = config["datasets"]["dbbook"]["files"]["train"]
    assert spec == {"path": str(local), "sha256": "6dae3a51cb7cb03de7c3b1b562a268f2dcb5a304be3b238c1077afad072923c2"}
    assert changes == [f"datasets.dbbook.files.train: local path {local} replaces url"]
    check_config(config, SCHEMA)


def test_a_member_checksum_pins_the_archive_so_it_goes_with_the_url(tmp_path):
    config = shipped_config()
    config["datasets"]["ml1m"]["files"]["ratings"]["path"] = "/data/ratings.dat"
    resolve_local_copies(config)
    assert config["datasets"]["ml1m"]["files"]["ratings"] == {"path": "/data/ratings.dat"}


def test_null_url_and_sha256_are_accepted_and_mean_absent(tmp_path):
    config = shipped_config()
    local = tmp_path / "names.json"
    local.write_text("{}")
    config["datasets"]["dbbook"]["files"]["names"].update(url=None, sha256=None, path=str(local))
    config["run"]["datasets"] = ["dbbook"]
    resolve_local_copies(config)
    assert config["datasets"]["dbbook"]["files"]["names"] == {"path": str(local)}
    check_config(config, SCHEMA)


def test_two_origins_or_a_missing_file_stop_at_start(tmp_path):
    config = shipped_config()
    both = copy.deepcopy(config)
    both["datasets"]["ml1m_mini"]["files"]["ratings"]["url"] = "https://example.org/r.inter"
    with pytest.raises(
        ConfigError,
        match=r"datasets\.ml1m_mini\.files\.ratings: give one of url, path, package; got \['url', 'package'\]",
    ):
        check_config(both, SCHEMA)
    missing = copy.deepcopy(config)
    missing["run"]["datasets"] = ["dbbook"]
    missing["datasets"]["dbbook"]["files"]["test"]["path"] = str(tmp_path / "absent.tsv")
    resolve_local_copies(missing)
    with pytest.raises(
        ConfigError, match=rf"datasets\.dbbook\.files\.test\.path: {tmp_path}/absent\.tsv is not a file"
    ):
        check_config(missing, SCHEMA)


def test_extra_config_file_points_a_dataset_at_local_copies(original_data, tmp_path):
    """Through Snakemake: the download job records every file as a local path, checked
    against the shipped sha256; a wrong checksum fails the job, a missing file the start."""
    files = local_original_files(original_data, "dbbook")
    override = write_override(tmp_path, {"datasets": {"dbbook": {"files": files}}, "run": {"datasets": ["dbbook"]}})
    target = "results/dbbook/download/manifest.json"
    api_run(tmp_path, [target], "local", [*CONFIG_FILES, override])
    manifest = json.loads((tmp_path / target).read_text())
    assert set(manifest) == set(shipped_config()["datasets"]["dbbook"]["files"])
    shipped = shipped_config()["datasets"]["dbbook"]["files"]
    for role, entry in manifest.items():
        # the manifest records the resolved file (a shared/ reached through a link resolves)
        assert entry["origin"] == "path" and Path(entry["path"]) == Path(files[role]["path"]).resolve(), role
        assert entry["sha256"] == shipped[role]["sha256"], role

    copy_dir = tmp_path / "copies"
    copy_dir.mkdir()
    shutil.copy(files["test"]["path"], copy_dir / "test.tsv")
    with open(copy_dir / "test.tsv", "a") as handle:
        handle.write("1\t2\t1\n")  # not the file the checksum pins
    files["test"] = {"path": str(copy_dir / "test.tsv")}
    wrong = write_override(
        tmp_path, {"datasets": {"dbbook": {"files": files}}, "run": {"datasets": ["dbbook"]}}, "wrong.yaml"
    )
    (tmp_path / target).unlink()
    with pytest.raises(Exception):  # noqa: B017 (the Snakemake API's own failure type)
        api_run(tmp_path, [target], "local", [*CONFIG_FILES, wrong])
    assert "sha256 mismatch" in (tmp_path / "logs/dbbook/download.log").read_text()

    files["test"] = {"path": str(copy_dir / "absent.tsv")}
    absent = write_override(
        tmp_path, {"datasets": {"dbbook": {"files": files}}, "run": {"datasets": ["dbbook"]}}, "absent.yaml"
    )
    with pytest.raises(Exception, match=r"datasets\.dbbook\.files\.test\.path: .*absent\.tsv is not a file"):
        planned_jobs(tmp_path, [target], overrides=[absent])


def test_a_null_path_from_the_command_line_keeps_the_url(tmp_path):
    # Snakemake passes `--config 'datasets={"dbbook": {"files": {"train": {"path": null}}}}'` as the
    # string "null": read as the schema's null before the local-copy rule, it is no path, so the url stays.
    from snakemake.utils import update_config

    from rekalm.config import read_config_strings

    config = shipped_config()
    url = config["datasets"]["dbbook"]["files"]["train"]["url"]
    update_config(config, {"datasets": {"dbbook": {"files": {"train": {"path": "null"}}}}})
    read_config_strings(config, SCHEMA)
    assert resolve_local_copies(config) == []
    assert config["datasets"]["dbbook"]["files"]["train"]["url"] == url
    assert config["datasets"]["dbbook"]["files"]["train"]["path"] is None
    check_config(config, SCHEMA)


def test_the_snakefile_types_command_line_strings_before_the_local_copy_rule():
    snakefile = (REPO / "Snakefile").read_text(encoding="utf-8")
    assert snakefile.index("read_config_strings(config") < snakefile.index("resolve_local_copies(config)")
