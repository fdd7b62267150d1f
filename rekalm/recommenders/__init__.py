"""The recommenders the LLM is compared with, each a registered fit function that ranks the
same candidate lists: the interaction matrix they learn from (train-side rows only), the
baselines registry, and the models by family (classical CF, graph CF, knowledge-aware).
Tuning, ranking and the stage itself are :mod:`rekalm.evaluation.baselines`. Imports
``rekalm.common``, ``rekalm.data`` and ``rekalm.knowledge``; runs in ``envs/recommenders.yaml``.
"""
