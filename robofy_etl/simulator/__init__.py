"""The built-in Robofy API simulator: a seeded dataset served over real HTTP on loopback.

Used by the tests, the benchmarks and the demo. Imports nothing from the rest of robofy_etl.
See docs/simulator.md.
"""

from __future__ import annotations

from robofy_etl.simulator.app import (
    ENDPOINTS,
    PAGE_SIZES,
    Variants,
    full_sync_requests,
    full_sync_targets,
)
from robofy_etl.simulator.dataset import (
    SCALES,
    Chatbot,
    Dataset,
    Lead,
    Message,
    Project,
    Scale,
    Session,
    Stat,
)
from robofy_etl.simulator.faults import FAULT_KINDS, Faults
from robofy_etl.simulator.server import (
    RequestLogEntry,
    Simulator,
    SimulatorConfig,
    main,
    serve,
)

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "PAGE_SIZES",
    "SCALES",
    "Chatbot",
    "Dataset",
    "Faults",
    "Lead",
    "Message",
    "Project",
    "RequestLogEntry",
    "Scale",
    "Session",
    "Simulator",
    "SimulatorConfig",
    "Stat",
    "Variants",
    "full_sync_requests",
    "full_sync_targets",
    "main",
    "serve",
]
