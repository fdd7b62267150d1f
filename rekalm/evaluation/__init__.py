"""Classical baselines on the same candidates, metrics (ranx), the verdict and the
comparison report. Imports the families below it except the LLM-only ones' heavy
dependencies. Baselines run in ``envs/data.yaml``; evaluate and compare in
``envs/metrics.yaml``.
"""
