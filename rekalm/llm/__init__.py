"""The LLM's side of the data: the one Hugging Face loader, ranking prompts, the base-model
preparation, and the per-ablation training/test sets with their prompt fitting. Imports
``rekalm.common``, ``rekalm.data`` and ``rekalm.knowledge``. Runs in ``envs/llm.yaml``.
"""
