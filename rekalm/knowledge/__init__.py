"""Knowledge stages: association-rule mining (and its bitset engine), the DBpedia lookup
(SPARQL client, local oxigraph server, label matching, per-domain facts), the original
study's knowledge files, and lexicalization of every source into text. Imports
``rekalm.common`` and ``rekalm.data``. Runs in ``envs/data.yaml``.
"""
