"""REKALM library: every workflow stage as importable, typed functions, one subpackage per
stage family, in pipeline order:

- ``rekalm.common``: table contracts, I/O, fingerprints (imports no other family);
- ``rekalm.data``: download, raw files, prepare, split;
- ``rekalm.knowledge``: rule mining, DBpedia lookup, lexicalization;
- ``rekalm.llm``: model loading, prompts, base-model preparation, training/test sets;
- ``rekalm.training``: LoRA training and the merge;
- ``rekalm.ranking``: inference (score / generate) and parsing;
- ``rekalm.evaluation``: baselines, metrics, verdict, comparison report.

A family imports only the families before it (``tests/test_layering.py`` keeps it so).
The contracts that span families stay here: ``config``, ``registries`` (the one import
path for extension authors), ``systems``, ``extensions``, ``replicates``. Modules keep the
names of the stages they implement; the Snakemake scripts in ``workflow_scripts/`` only
read the ``snakemake`` object and call into them.
"""

from rekalm.moved_modules import install as _install_old_paths
from rekalm.version import __version__

__all__ = ["__version__"]

_install_old_paths()
