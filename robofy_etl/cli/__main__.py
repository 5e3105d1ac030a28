"""``python -m robofy_etl.cli``: the same as the ``robofy-etl`` executable."""

from robofy_etl.cli.entry import run

if __name__ == "__main__":  # pragma: no cover - exercised by the subprocess tests
    run()
