"""lookup_dbpedia on a local RDF dump (loaded once into oxigraph, served on 127.0.0.1), and
the Snakemake rule running the offline and the local-dump routes."""

from __future__ import annotations

import bz2
import json

import pandas as pd
import pytest
import yaml
from synthetic_dbpedia import BOTH, DOMAINS, MOVIE, REPO, film_items, require_oxigraph

from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.lookup_dbpedia import lookup_knowledge


def test_a_bz2_dump_is_loaded_once_and_served_locally(synthetic_dump, tmp_path):
    require_oxigraph()
    compressed = tmp_path / "films.ttl.bz2"
    compressed.write_bytes(bz2.compress(synthetic_dump.read_bytes()))
    settings = DbpediaSettings.from_config(
        {
            "local_dump": [str(compressed)],
            "local_store_dir": str(tmp_path / "stores"),
            "cache_dir": str(tmp_path / "cache"),
            "request_delay_s": 0,
        }
    )
    first = lookup_knowledge(film_items(3), BOTH, MOVIE, settings)
    assert first.stats["requests_made"] == 2 and first.stats["endpoint"].startswith("local dump")
    marker = next((tmp_path / "stores").glob("*/loaded.json"))
    loaded_at = marker.stat().st_mtime_ns
    again = lookup_knowledge(film_items(3), BOTH, MOVIE, settings)
    assert again.stats["requests_made"] == 0 and marker.stat().st_mtime_ns == loaded_at
    pd.testing.assert_frame_equal(first.triples, again.triples)
    with pytest.raises(ValueError, match="dbpedia.local_dump: file .*missing.ttl not found"):
        lookup_knowledge(
            film_items(1), BOTH, MOVIE, DbpediaSettings.from_config({"local_dump": [str(tmp_path / "missing.ttl")]})
        )


@pytest.mark.slow
def test_the_rule_runs_the_offline_and_the_local_dump_routes(synthetic_dump, tmp_path):
    require_oxigraph()
    from snakemake_helpers import api_run

    (tmp_path / "Snakefile").write_text(
        "".join(
            f"include: {str(REPO / 'rules' / name)!r}\n" for name in ("common.smk", "lookup_dbpedia.smk")
        )  # real rule + input functions
    )
    config = {
        "domains": DOMAINS,
        "dbpedia": {
            "local_dump": [str(synthetic_dump)],
            "local_store_dir": "results/cache/oxigraph",
            "request_delay_s": 0,
        },
        "datasets": {
            "offline": {"domain": "movie", "knowledge": {"graph": {"source": "attributes"}}},
            "local": {"domain": "movie", "knowledge": {"graph": {"source": "dbpedia"}, "text": {"source": "dbpedia"}}},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    for dataset in ("offline", "local"):
        (tmp_path / "results" / dataset / "prepare").mkdir(parents=True)
        film_items(5).to_parquet(tmp_path / "results" / dataset / "prepare" / "items.parquet", index=False)
    targets = [
        f"results/{d}/lookup_dbpedia/{f}"
        for d in ("offline", "local")
        for f in ("triples.parquet", "abstracts.parquet", "mapping.parquet", "stats.json")
    ]
    api_run(tmp_path, targets, "local", [tmp_path / "config.yaml"], snakefile=tmp_path / "Snakefile", quiet=True)
    offline = json.loads((tmp_path / "results" / "offline" / "lookup_dbpedia" / "stats.json").read_text())
    local = json.loads((tmp_path / "results" / "local" / "lookup_dbpedia" / "stats.json").read_text())
    assert offline["requests_made"] == 0 and offline["triples_by_relation"] == {"genre": 5, "release_year": 5}
    assert local["requests_made"] == 2 and local["abstracts"] == 5 and local["share_mapped"] == 1.0
    assert (tmp_path / "results" / "cache" / "sparql").is_dir()
    assert (tmp_path / "logs" / "local" / "lookup_dbpedia.log").read_text().count("lookup_dbpedia local") == 1
