"""Tests of robofy_etl.api (all over httpx.MockTransport; no network)."""
