"""The PostgreSQL back end of the warehouse: schema, COPY loads, slice locks (psycopg 3)."""

from __future__ import annotations
