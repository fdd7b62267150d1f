# Knowledge sources as text: one job per dataset and source (collab, graph, text, ...).
# The source's input table comes from config lexicalize.sources.<source>.input.


rule lexicalize:
    input:
        unpack(get_lexicalize_inputs),
    output:
        texts="results/{dataset}/lexicalize/{source}.jsonl",
        stats=report(
            "results/{dataset}/lexicalize/{source}.stats.json",
            caption="../config/report/lexicalize_stats.rst",
            category="Knowledge",
            subcategory="{dataset}",
        ),
    log:
        "logs/{dataset}/lexicalize/{source}.log",
    benchmark:
        "logs/{dataset}/lexicalize/{source}.benchmark.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        domain=get_domain_spec,
    script:
        "../workflow_scripts/lexicalize.py"
