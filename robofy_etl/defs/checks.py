"""Asset checks: unique keys, referential integrity, freshness, mart grain, reconciliation.

The queries live in ``robofy_etl.warehouse.quality``, written once for DuckDB and PostgreSQL;
here each check is only a spec. The raw checks run as one step and the mart checks as another
(each step costs Dagster start-up time), over one read connection each (``get_reader``: a
DuckDB connection, or a read-only PostgreSQL one), and both can be subset to the checks a run
selected.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at runtime.
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import dagster as dg
from dagster import AssetCheckExecutionContext

from robofy_etl.defs.ingest import POOL, raw_key
from robofy_etl.defs.models import model_key
from robofy_etl.defs.partitions import days_of_run
from robofy_etl.defs.resources import WarehouseResource
from robofy_etl.sync.registry import FRESHNESS, REFERENCES, STREAMS
from robofy_etl.warehouse import quality
from robofy_etl.warehouse.models import Model
from robofy_etl.warehouse.reader import Reader

log = logging.getLogger(__name__)

# The key under which a check's mapping carries the run's id, beside the run's tags.
RUN_ID = "robofy/run_id"

# A check's query, given a read connection (either back end) and the run's tags (the days the
# run asked for) and id: raw checks look at what the run wrote, so their cost follows the
# change, not the history.
Evaluate = Callable[[Reader, Mapping[str, str]], quality.CheckOutcome]


class _Check:
    """One check: its spec, how to evaluate it, and whether a failure only warns."""

    def __init__(self, spec: dg.AssetCheckSpec, evaluate: Evaluate, *, warn: bool = False) -> None:
        self.spec = spec
        self.evaluate = evaluate
        self.warn = warn


def _raw_unique(conn: Reader, tags: Mapping[str, str], *, table: str) -> quality.CheckOutcome:
    return quality.raw_unique_key(conn, table, tags.get(RUN_ID))


def _orphans(
    conn: Reader, tags: Mapping[str, str], *, ref: quality.Reference
) -> quality.CheckOutcome:
    return quality.orphans(conn, ref, tags.get(RUN_ID))


def _fresh(conn: Reader, tags: Mapping[str, str], *, table: str) -> quality.CheckOutcome:
    """Fresh means: the last day this run asked for (yesterday, for a run without a range) was
    loaded recently. So a sync of a past window is judged on that window, not on today."""
    now = datetime.now(UTC).replace(tzinfo=None)
    asked = days_of_run(tags)
    wanted = asked.last if asked else now.date() - timedelta(days=1)
    return quality.latest_load(conn, table, FRESHNESS, now, min(wanted, now.date()))


def _grain(conn: Reader, _tags: Mapping[str, str], *, model: Model) -> quality.CheckOutcome:
    return quality.model_grain(conn, model.name, model.key_columns)


def _reconcile(conn: Reader, tags: Mapping[str, str]) -> quality.CheckOutcome:
    """Compares the days the run asked for (all days, for a run without a range)."""
    asked = days_of_run(tags)
    days = (asked.start, asked.last) if asked else None
    return quality.reconcile_daily_activity(conn, days=days)


def _raw_checks() -> list[_Check]:
    checks: list[_Check] = []
    for table, stream in STREAMS.items():
        checks.append(
            _Check(
                dg.AssetCheckSpec(
                    f"{table}__unique_{'_'.join(stream.key)}",
                    asset=raw_key(table),
                    description=f"raw.{table} has one row per ({', '.join(stream.key)}).",
                ),
                partial(_raw_unique, table=table),
            )
        )
    for ref in REFERENCES:
        checks.append(
            _Check(
                dg.AssetCheckSpec(
                    ref.name,
                    asset=raw_key(ref.child),
                    additional_deps=[raw_key(ref.parent)],
                    description=f"Every raw.{ref.child} row has its raw.{ref.parent} row.",
                ),
                partial(_orphans, ref=ref),
            )
        )
    for table in (name for name, stream in STREAMS.items() if stream.fresh):
        checks.append(
            _Check(
                dg.AssetCheckSpec(
                    f"{table}__loaded_recently",
                    asset=raw_key(table),
                    description=f"The last day the run asked for (yesterday, without a range) "
                    f"was loaded into raw.{table} in the last {FRESHNESS}.",
                ),
                partial(_fresh, table=table),
                warn=True,
            )
        )
    return checks


def _mart_checks(models: Sequence[Model]) -> list[_Check]:
    checks: list[_Check] = []
    for model in models:
        if model.schema != "marts" or not model.key_columns:
            continue
        checks.append(
            _Check(
                dg.AssetCheckSpec(
                    f"{model.relation}__unique_grain",
                    asset=model_key(model),
                    description=f"{model.name}: {model.grain}, keys not null.",
                ),
                partial(_grain, model=model),
            )
        )
    if any(m.name == "marts.chatbot_daily_activity" for m in models):
        checks.append(
            _Check(
                dg.AssetCheckSpec(
                    "chatbot_daily_activity__reconciles_with_stats",
                    asset=dg.AssetKey(["marts", "chatbot_daily_activity"]),
                    # the longest conversation decides which early days are not yet complete
                    additional_deps=[dg.AssetKey(["marts", "sessions"])],
                    description="Daily messages from transcripts agree with the stats API "
                    "(2% tolerance) on settled days that no conversation from before the "
                    "synced range reaches; the difference is reported as metadata.",
                ),
                _reconcile,
                warn=True,
            )
        )
    return checks


def _multi_check(name: str, checks: list[_Check], pool: str | None) -> dg.AssetChecksDefinition:
    by_key = {c.spec.key: c for c in checks}

    @dg.multi_asset_check(name=name, specs=[c.spec for c in checks], can_subset=True, pool=pool)
    def _run(
        context: AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        started = time.monotonic()
        selected = [by_key[key] for key in context.selected_asset_check_keys]
        with warehouse.get_reader() as conn:
            tags = {**context.run.tags, RUN_ID: context.run.run_id}
            outcomes = [(check, check.evaluate(conn, tags)) for check in selected]
        failed = [check.spec.name for check, outcome in outcomes if not outcome.passed]
        log.info(
            "%s: %d of %d passed in %.1fs%s",
            name,
            len(outcomes) - len(failed),
            len(outcomes),
            time.monotonic() - started,
            f"; failed: {', '.join(failed)}" if failed else "",
        )
        for check, outcome in outcomes:
            yield dg.AssetCheckResult(
                asset_key=check.spec.asset_key,
                check_name=check.spec.name,
                passed=outcome.passed,
                description=outcome.description,
                metadata=dict(outcome.metadata),
                severity=dg.AssetCheckSeverity.WARN if check.warn else dg.AssetCheckSeverity.ERROR,
            )

    return _run


def all_checks(models: Sequence[Model], pool: str | None = POOL) -> list[dg.AssetChecksDefinition]:
    return [
        _multi_check("raw_checks", _raw_checks(), pool),
        _multi_check("mart_checks", _mart_checks(models), pool),
    ]
