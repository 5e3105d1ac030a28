"""``python -m robofy_etl.simulator``: serve the simulated Robofy API until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from robofy_etl.simulator.server import main

if __name__ == "__main__":
    sys.exit(main())
