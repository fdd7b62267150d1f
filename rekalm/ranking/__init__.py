"""Candidate ranking by an LLM: inference inputs, scoring by log-likelihood, generation,
and parsing generated lists back to items. Imports the families below it. Runs in
``envs/llm.yaml`` (GPU rules).
"""
