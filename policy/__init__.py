"""Storage policies: which representation of an upload to keep, and its quality receipt."""

from policy.choose import Candidate, Decision, Reconstruct, choose, score
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
    "Score",
    "StoragePolicy",
    "choose",
    "score",
]
