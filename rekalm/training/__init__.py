"""LoRA training (data, checkpoints, log, data-parallel workers) and the adapter merge.
Imports the families below it (common, data, knowledge, llm). Runs in ``envs/llm.yaml``
(GPU rules).
"""
