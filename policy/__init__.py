"""Storage policies: which representation of an upload to keep, and its quality receipt.

Names load on first use (PEP 562): the settings need ``Floor`` and ``StoragePolicy``, not
the scoring (SciPy, through ``imaging.quality``), which would cost every CLI command a second.
``policy.choose`` is the module (an attribute the import system sets): its function is
``from policy.choose import choose``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policy.choose import Candidate, Decision, Reconstruct, SampleRead, score
    from policy.receipts import (
        NO_MODEL,
        REPRESENTATIONS,
        STORAGE_POLICIES,
        Floor,
        InvalidFloor,
        Metric,
        Receipt,
        ReceiptState,
        Representation,
        Score,
        StoragePolicy,
    )

_HOMES = {
    "Candidate": "policy.choose",
    "Decision": "policy.choose",
    "Reconstruct": "policy.choose",
    "SampleRead": "policy.choose",
    "score": "policy.choose",
    "NO_MODEL": "policy.receipts",
    "REPRESENTATIONS": "policy.receipts",
    "STORAGE_POLICIES": "policy.receipts",
    "Floor": "policy.receipts",
    "InvalidFloor": "policy.receipts",
    "Metric": "policy.receipts",
    "Receipt": "policy.receipts",
    "ReceiptState": "policy.receipts",
    "Representation": "policy.receipts",
    "Score": "policy.receipts",
    "StoragePolicy": "policy.receipts",
}

__all__ = [
    "NO_MODEL",
    "REPRESENTATIONS",
    "STORAGE_POLICIES",
    "Candidate",
    "Decision",
    "Floor",
    "InvalidFloor",
    "Metric",
    "Receipt",
    "ReceiptState",
    "Reconstruct",
    "Representation",
    "SampleRead",
    "Score",
    "StoragePolicy",
    "score",
]


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
