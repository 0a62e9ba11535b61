"""Entry point for Dagster: `dagster dev -f definitions.py` (from this folder).

DAEDA_BIN names the daeda binary (default: `daeda` on PATH) and DAEDA_DIR the
folder holding daeda.toml, the catalog and the run root (default: the current
directory); the DAEDA_* settings in the environment apply as for the CLI.
"""

import os

from daeda_dagster import Daeda, definitions

defs = definitions(Daeda(binary=os.environ.get("DAEDA_BIN", "daeda"), cwd=os.environ.get("DAEDA_DIR") or None))
