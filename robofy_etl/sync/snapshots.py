"""The small dimensions, projects and chatbots: a full snapshot every run, merged on the key.

A stored row the listing leaves out is marked deleted only when its own endpoint answers 404
(``confirm.confirm_vanished``).
"""

from __future__ import annotations

import logging
from typing import Any

from robofy_etl.api import RobofyClient, RobofyError, RobofyNotFoundError
from robofy_etl.sync.confirm import confirm_vanished
from robofy_etl.sync.failures import fatal, reason
from robofy_etl.sync.registry import CHATBOTS, PROJECTS, syncs
from robofy_etl.sync.report import SyncReport, Tracker
from robofy_etl.sync.rows import as_int, as_str, chatbot_row, project_row
from robofy_etl.sync.write import write
from robofy_etl.warehouse import WarehouseLike

log = logging.getLogger(__name__)


@syncs(PROJECTS)
def sync_projects(
    api: RobofyClient, wh: WarehouseLike, run_id: str, *, naive_tz: str = "UTC"
) -> SyncReport:
    """Full snapshot of the account's projects, merged on project_id.

    A stored project the listing leaves out is marked deleted only when its own endpoint
    (Retrieve Project) answers 404; if it still answers, the listing was incomplete and the
    project is kept (and reported).
    """
    t = Tracker(api, "projects", "snapshot", naive_tz, ("projects", "project"))
    table = PROJECTS.name
    stored = wh.active_project_ids()
    rows: list[dict[str, Any]] = []
    for record in api.iter_items("projects"):
        t.observe(table, record)
        project_id = as_int(record.get("id", record.get("project_id")))
        if project_id is None:
            t.reject(table, "missing or non-integer project id ('id')", record)
            continue
        rows.append(project_row(t, record, project_id))
    listed = {row["project_id"] for row in rows}
    vanished = [p for p in stored if p not in listed]
    gone = confirm_vanished(api, t, "project", [(str(p), {"project_id": p}) for p in vanished])
    within = {"project_id": sorted(listed | {int(p) for p in gone})}
    return write(wh, run_id, t, table, rows, scope=None, within=within)


@syncs(CHATBOTS)
def sync_chatbots(
    api: RobofyClient, wh: WarehouseLike, run_id: str, *, naive_tz: str = "UTC"
) -> SyncReport:
    """Full snapshot of every live project's chatbots, merged on chatbot_id.

    A stored chatbot the listing leaves out is marked deleted only when its own endpoint
    (Retrieve Agent) answers 404. A project whose chatbots cannot be listed (403, an error on
    every attempt) keeps its chatbots as they are, and the problem is reported.
    """
    t = Tracker(api, "chatbots", "snapshot", naive_tz, ("chatbots", "chatbot"))
    table = CHATBOTS.name
    with wh.hold():
        project_ids = wh.active_project_ids()
        stored = wh.active_chatbots()

    def list_chatbots(project_id: int) -> list[dict[str, Any]] | RobofyError:
        try:
            return list(api.iter_items("chatbots", project_id=project_id))
        except RobofyNotFoundError:
            # Deleted since the project snapshot: its chatbots are checked below.
            log.warning("project %s is gone (404 listing its chatbots)", project_id)
            return []
        except RobofyError as exc:
            if fatal(exc):
                raise
            return exc

    rows: list[dict[str, Any]] = []
    unlisted: set[int] = set()
    for project_id, records in api.fan_out(project_ids, list_chatbots):
        if isinstance(records, RobofyError):
            unlisted.add(project_id)
            t.problem(
                table,
                f"chatbots of project {project_id} did not load: {reason(records)}. Its stored "
                "chatbots are kept; the next run retries.",
            )
            continue
        for record in records:
            t.observe(table, record)
            chatbot_id = as_str(record.get("chatbot_id"))
            if chatbot_id is None:
                t.reject(table, "missing chatbot id ('chatbot_id' or 'id')", record)
                continue
            rows.append(chatbot_row(t, record, chatbot_id, project_id))
    listed = {row["chatbot_id"] for row in rows}
    vanished = [c for c in stored if c.chatbot_id not in listed and c.project_id not in unlisted]
    gone = confirm_vanished(
        api, t, "chatbot", [(c, {"project_id": p, "chatbot_id": c}) for c, p in vanished]
    )
    within = {"chatbot_id": sorted(listed | set(gone))}
    report = write(wh, run_id, t, table, rows, scope=None, within=within)
    report.details["projects"] = len(project_ids)
    return report
