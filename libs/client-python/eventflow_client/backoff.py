"""Exponential backoff with jitter for the publisher's retries and the subscriber's reconnects:
delay n (from 0) is uniform in [d/2, d] with d = min(max, min * 2**n)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts, in seconds."""

    min: float = 0.1  # the first delay (before jitter)
    max: float = 5.0  # the longest delay (before jitter)

    def delay(self, attempt: int) -> float:
        full = min(self.max, self.min * (2 ** min(attempt, 30)))
        return random.uniform(full / 2, full)
