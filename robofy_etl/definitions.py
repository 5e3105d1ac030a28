"""The one Definitions object that workspace.yaml and `dagster` commands load."""

from __future__ import annotations

from robofy_etl.defs.assembly import build_definitions
from robofy_etl.settings import Settings

defs = build_definitions(Settings.from_env())
