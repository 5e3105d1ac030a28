"""Dagster resources: configuration plus lifecycle for the API client and the warehouse.

Both carry the settings as the ``ROBOFY_*`` variables a user would set (``Settings.as_env()``)
and parse them with ``Settings.from_env``: the settings are declared and validated in
``robofy_etl.settings`` only, and a value changed in the Dagster launchpad is checked by the
same rules, with the same messages, as one set in the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field, PrivateAttr

from robofy_etl.api import ClientConfig, RobofyClient
from robofy_etl.settings import Settings
from robofy_etl.warehouse import Warehouse, WarehouseLike
from robofy_etl.warehouse.errors import models_unsupported
from robofy_etl.warehouse.reader import AlchemyReader, DuckDBReader, Reader
from robofy_etl.warehouse.url import URL_ENV

_SETTINGS_DOC = (
    "ROBOFY_* settings by variable name, as in the environment (see the README); a variable "
    "left out takes its default."
)


class RobofyResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Robofy API: hands out a configured, read-only ``RobofyClient``."""

    api_key: str = Field(repr=False, description="Robofy API key; set from ROBOFY_API_KEY.")
    settings: dict[str, str] = Field(default_factory=dict, description=_SETTINGS_DOC)

    @property
    def naive_timezone(self) -> str:
        return Settings.from_env(self.settings).naive_timezone

    def client_config(self) -> ClientConfig:
        return ClientConfig.from_settings(Settings.from_env(self.settings), api_key=self.api_key)

    @contextmanager
    def get_client(self) -> Iterator[RobofyClient]:
        with RobofyClient(self.client_config()) as api:
            yield api


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The warehouse (a DuckDB file, or PostgreSQL through ``ROBOFY_WAREHOUSE_URL``), and the
    read-only copy published for dashboards (DuckDB only)."""

    settings: dict[str, str] = Field(default_factory=dict, description=_SETTINGS_DOC)
    warehouse_url: str = Field(
        default="",
        repr=False,
        description=f"{URL_ENV} (it may hold a password: set it from the environment).",
    )

    # The warehouse of this resource, its tables created: Dagster keeps one resource for the
    # steps a process runs, so DuckDB's file is opened once to create the tables, not once per
    # step (each open builds a database instance: about 20-40 ms).
    _warehouse: WarehouseLike | None = PrivateAttr(default=None)

    def _settings(self) -> Settings:
        url = {URL_ENV: self.warehouse_url} if self.warehouse_url else None
        return Settings.from_env(self.settings, overrides=url)

    @property
    def publish_path(self) -> str:
        return self._settings().resolved_publish_path

    @property
    def backend(self) -> str:
        """``duckdb`` or ``postgresql``."""
        return self._settings().warehouse.backend

    def get_warehouse(self) -> WarehouseLike:
        """The warehouse the sync loads into, either back end, its tables created (once)."""
        if self._warehouse is None:
            wh = Warehouse.from_settings(self._settings())
            wh.initialize()
            self._warehouse = wh
        return self._warehouse

    @contextmanager
    def get_reader(self) -> Iterator[Reader]:
        """A read connection to the warehouse, either back end, for the data-quality checks.

        DuckDB: a connection to the file (it waits for the lock, as a load does). PostgreSQL:
        a pooled connection whose transactions are read-only.
        """
        wh = self.get_warehouse()
        if isinstance(wh, Warehouse):
            with wh.connect() as conn:
                yield DuckDBReader(conn)
            return
        from robofy_etl.warehouse.pg.warehouse import PgWarehouse  # the postgres extra

        assert isinstance(wh, PgWarehouse)
        try:
            with wh.connect(read_only=True) as pg_conn:
                yield AlchemyReader(pg_conn)
        finally:
            wh.dispose()

    def get_duckdb(self, doing: str = "build") -> Warehouse:
        """The DuckDB warehouse, for what runs on DuckDB only (incremental SQL model builds).

        Raises:
            WarehouseUnsupportedError: if the warehouse is PostgreSQL.
        """
        settings = self._settings()
        if settings.warehouse.backend != "duckdb":
            raise models_unsupported(settings.warehouse.redacted, doing)
        wh = self.get_warehouse()
        assert isinstance(wh, Warehouse)
        return wh
