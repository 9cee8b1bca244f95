"""The service as `srstore serve` builds it, plus a bench-only static route: /static/{file}.

Serving the same bytes as a file from the same server is the yardstick for a cache hit.
"""

from __future__ import annotations

import os

from fastapi.staticfiles import StaticFiles

from app.main import create_app

app = create_app()
app.mount("/static", StaticFiles(directory=os.environ["SRSTORE_BENCH_STATIC_DIR"]), "static")
