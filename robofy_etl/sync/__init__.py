"""Stream syncs: read one stream from the API and land it in the warehouse, slice by slice.

This is plain Python between the client (``api``) and the storage layer (``warehouse``), so the
Dagster layer stays a thin wrapper and the sync logic is testable without an orchestrator. Each
sync reads what it needs, talks HTTP with no database connection open, and then writes one
transaction per slice: the data, its sync state, drift, quarantine and audit rows together.

Incremental rules (design.md section 4):
- projects, chatbots: full snapshot, merged on the key; vanished rows are soft-deleted
  (``snapshots``).
- sessions: daily slices by the UTC day the session started. The list is scanned newest
  activity first; the scan stops once the page is past the window while that order holds, and
  falls back to a full scan on any disorder (``scan``). Transcripts are fetched only for
  sessions that are new or whose ``last_message_time`` changed, and land in the session's
  start-day slice (``conversations``).
- leads: daily slices by ``created_at``, same scan rule (``leads``).
- message stats: daily slices, fetched by date range (``stats``).
"""

from __future__ import annotations

from robofy_etl.sync.conversations import (
    BACKFILL_PASS_DAYS,
    TRANSCRIPT_CHUNK,
    sync_conversations,
)
from robofy_etl.sync.failures import MAX_FAILURES_IN_A_ROW
from robofy_etl.sync.leads import MISSES_TO_DELETE, sync_leads
from robofy_etl.sync.registry import STATUS_SETTLE
from robofy_etl.sync.report import SyncReport
from robofy_etl.sync.snapshots import sync_chatbots, sync_projects
from robofy_etl.sync.stats import sync_message_stats
from robofy_etl.sync.window import Window

__all__ = [
    "BACKFILL_PASS_DAYS",
    "MAX_FAILURES_IN_A_ROW",
    "MISSES_TO_DELETE",
    "STATUS_SETTLE",
    "TRANSCRIPT_CHUNK",
    "SyncReport",
    "Window",
    "sync_chatbots",
    "sync_conversations",
    "sync_leads",
    "sync_message_stats",
    "sync_projects",
]
