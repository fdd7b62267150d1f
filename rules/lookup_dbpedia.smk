# Factual knowledge for the graph/text sources: DBpedia over SPARQL (remote endpoint or a
# local dump served by oxigraph), the items' own attributes (offline route), or the
# original study's knowledge files (graph: {source: original}, fetched by download).
# Queries are cached in dbpedia.cache_dir, outside the declared outputs, so a re-run or a
# resumed run makes no repeated requests.


rule lookup_dbpedia:
    input:
        item_table="results/{dataset}/prepare/items.parquet",
        dumps=get_dbpedia_dump_files,
        downloads=get_original_knowledge_manifest,
    output:
        triples="results/{dataset}/lookup_dbpedia/triples.parquet",
        abstracts="results/{dataset}/lookup_dbpedia/abstracts.parquet",
        mapping="results/{dataset}/lookup_dbpedia/mapping.parquet",
        stats=report(
            "results/{dataset}/lookup_dbpedia/stats.json",
            caption="../config/report/lookup_stats.rst",
            category="Knowledge",
            subcategory="{dataset}",
        ),
    log:
        "logs/{dataset}/lookup_dbpedia.log",
    benchmark:
        "logs/{dataset}/lookup_dbpedia.benchmark.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=360,
    params:
        knowledge=get_knowledge_routes,
        domain_name=get_domain_name,
        domain=get_domain_settings,
        dbpedia=get_dbpedia_settings,
    script:
        "../workflow_scripts/lookup_dbpedia.py"
