"""robofy-etl: keep Robofy data in an analytics warehouse, incrementally, with Dagster."""

from __future__ import annotations

__version__ = "0.1.0"
