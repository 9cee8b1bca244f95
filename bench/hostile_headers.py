"""CPU seconds one conditional header costs: the entity-tag pattern srstore used before issue
23 against the linear parser it has now.

    python -m bench.hostile_headers

The old pattern is kept here only as the reference being compared with; the service no
longer uses it. Each row is one header an attacker can send (under 16 KB, h11's whole-head
limit; the service now refuses any single header over ``SRSTORE_MAX_HEADER_BYTES``, 8 KiB,
with 431 before parsing it).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tabulate import tabulate

from app.services.conditional import Preconditions, not_modified
from config.settings import Settings

_OLD_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')
ETAG = '"0123456789abcdef0123456789abcdef"'
MODIFIED = datetime(2026, 1, 1, tzinfo=UTC)


def _old(header: str) -> bool:
    return any(m.group(2) == ETAG for m in _OLD_ENTITY_TAG.finditer(header))


def _new(header: str) -> bool:
    return not_modified(Preconditions(if_none_match=header), ETAG, MODIFIED)


def _cpu_seconds(parse: Callable[[str], bool], header: str) -> float:
    started = time.process_time()
    parse(header)
    return time.process_time() - started


def main() -> None:
    limit = Settings.model_fields["max_header_bytes"].default
    cases = {
        "a + 16,000 spaces + a": "a" + " " * 16_000 + "a",
        "a + 8,190 spaces + a (8 KiB: the limit)": "a" + " " * (limit - 2) + "a",
        "opening quote + 16,000 spaces": '"' + " " * 16_000,
        "16,000 x W/": "W/" * 8_000,
        "a valid list of 200 tags": ", ".join(f'"{i:032x}"' for i in range(200)),
    }
    rows = [
        [
            name,
            len(header),
            f"{_cpu_seconds(_old, header):.4f}",
            f"{_cpu_seconds(_new, header):.6f}",
        ]
        for name, header in cases.items()
    ]
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    print(
        tabulate(
            rows,
            headers=["If-None-Match", "bytes", "CPU s, pattern before", "CPU s, now"],
            tablefmt="github",
        )
    )


if __name__ == "__main__":
    main()
