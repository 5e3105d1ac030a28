"""HTTP layer of robofy-etl: a read-only, tolerant Robofy API client (no dagster, no duckdb)."""

from __future__ import annotations

from robofy_etl.api.client import ClientConfig, EndpointStats, RobofyClient
from robofy_etl.api.endpoints import ENDPOINTS, Endpoint
from robofy_etl.api.errors import (
    PaginationLoopError,
    RobofyAPIError,
    RobofyAuthError,
    RobofyCertificateError,
    RobofyContractError,
    RobofyError,
    RobofyNotFoundError,
    RobofyPermissionError,
    RobofyRateLimitError,
    RobofyServerError,
    RobofyTimeoutError,
    RobofyTransportError,
)
from robofy_etl.api.pagination import Page
from robofy_etl.api.probe import ProbeReport, ProbeResult, format_probe_report, probe
from robofy_etl.api.records import find_drift, normalize_record, parse_timestamp, timestamp_format
from robofy_etl.api.retry import RetryPolicy

__all__ = [
    "ENDPOINTS",
    "ClientConfig",
    "Endpoint",
    "EndpointStats",
    "Page",
    "PaginationLoopError",
    "ProbeReport",
    "ProbeResult",
    "RetryPolicy",
    "RobofyAPIError",
    "RobofyAuthError",
    "RobofyCertificateError",
    "RobofyClient",
    "RobofyContractError",
    "RobofyError",
    "RobofyNotFoundError",
    "RobofyPermissionError",
    "RobofyRateLimitError",
    "RobofyServerError",
    "RobofyTimeoutError",
    "RobofyTransportError",
    "find_drift",
    "format_probe_report",
    "normalize_record",
    "parse_timestamp",
    "probe",
    "timestamp_format",
]
