"""Data stages: download (cached, verified), raw-file parsing, prepare (canonical
interactions and items) and the user split with its candidates. Imports only
``rekalm.common``. Runs in ``envs/data.yaml``.
"""
