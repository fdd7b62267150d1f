"""Shared contracts and helpers every stage family may use: inter-stage table contracts,
file I/O and fingerprints, fingerprinted folders, parse counters and the one display-name
normalisation. Imports no other family. Runs in every conda env.
"""
