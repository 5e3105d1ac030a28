"""Dagster resources: configuration plus lifecycle for the API client and the warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import dagster as dg
from pydantic import Field

from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient
from robofy_etl.settings import API_KEY_ENV, DEFAULT_BASE_URL
from robofy_etl.warehouse import Warehouse
from robofy_etl.warehouse.duckdb import DEFAULT_PUBLISH_STORAGE_VERSION


class RobofyResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Robofy API: hands out a configured, read-only ``RobofyClient``."""

    api_key: str = Field(repr=False, description="Robofy API key; set from ROBOFY_API_KEY.")
    base_url: str = DEFAULT_BASE_URL
    auth_header: Literal["bearer", "api-key"] = "bearer"
    max_in_flight: int = 16
    max_rps: float | None = None
    http_transport: Literal["urllib3", "httpx"] = "urllib3"
    timeout_s: float = 30.0
    max_attempts: int = 5
    retry_delay_s: float = 0.5
    naive_timezone: str = "UTC"
    stats_params: list[str] = ["projectId", "chatbotId", "startDate", "endDate"]

    def client_config(self) -> ClientConfig:
        if not self.api_key.strip():
            raise dg.Failure(f"{API_KEY_ENV} is empty: set it to your Robofy API key.")
        return ClientConfig(
            base_url=self.base_url,
            api_key=self.api_key,
            auth_header=self.auth_header,
            timeout_s=self.timeout_s,
            max_in_flight=self.max_in_flight,
            max_requests_per_second=self.max_rps,
            http_transport=self.http_transport,
            retry=RetryPolicy(max_attempts=self.max_attempts, initial_delay=self.retry_delay_s),
            naive_timezone=self.naive_timezone,
            stats_params=tuple(self.stats_params),  # type: ignore[arg-type]
        )

    @contextmanager
    def get_client(self) -> Iterator[RobofyClient]:
        with RobofyClient(self.client_config()) as api:
            yield api


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The DuckDB warehouse file, and the read-only copy published for dashboards."""

    path: str = "data/robofy.duckdb"
    publish_path: str = ""
    lock_timeout_s: float = 300.0
    memory_limit: str = "160MB"
    publish_storage_version: str = DEFAULT_PUBLISH_STORAGE_VERSION

    def get_warehouse(self) -> Warehouse:
        wh = Warehouse(
            self.path,
            lock_timeout_s=self.lock_timeout_s,
            memory_limit=self.memory_limit,
            publish_storage_version=self.publish_storage_version,
        )
        wh.initialize()
        return wh
