"""Regenerate the README's settings table and `.env.example` from robofy_etl/settings.py.

Usage: python scripts/gen_settings_doc.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robofy_etl.settings import env_example, settings_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
BEGIN = "<!-- generated from robofy_etl/settings.py by `make docs`: edit it there -->\n"
END = "<!-- end of generated settings -->\n"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(
            f"{README} has lost its settings markers: {BEGIN.strip()} ... {END.strip()}"
        )
    return head + BEGIN + settings_table() + END + tail


def main(argv: list[str] | None = None) -> int:
    """Write both files, or with --check exit 1 when either is out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    wanted = {
        README: readme_with_table(README.read_text(encoding="utf-8")),
        ENV_EXAMPLE: env_example(),
    }
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            sys.stderr.write(f"{path} is out of date: run python scripts/gen_settings_doc.py\n")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
