"""Regenerate docs/tables.md (the marts data dictionary) from sql/ and a fresh in-memory build.

Usage: python scripts/gen_tables_doc.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robofy_etl.warehouse.docs import generate_tables_doc

TABLES_MD = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def main(argv: list[str] | None = None) -> int:
    """Write docs/tables.md, or with --check exit 1 when it is out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = generate_tables_doc()
    current = TABLES_MD.read_text(encoding="utf-8") if TABLES_MD.exists() else ""
    if args.check:
        if current != text:
            sys.stderr.write(f"{TABLES_MD} is out of date: run python scripts/gen_tables_doc.py\n")
            return 1
        return 0
    TABLES_MD.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
