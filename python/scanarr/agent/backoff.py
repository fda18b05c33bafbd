"""Exponential reconnect delays with jitter (PROTOCOL.md §2, §9)."""

from __future__ import annotations

import random


class Backoff:
    """Delays that start at `initial`, double on each failure and stop growing at `cap`.

    Each delay is drawn in [d/2, d] ("equal jitter") so that many watchers restarted together do
    not reconnect in lockstep, while the delay still grows. `reset` after a good handshake.
    """

    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None) -> None:
        self.initial = max(initial, 0.0)
        self.cap = max(cap, self.initial)
        self._failures = 0
        self._rng = rng or random.Random()

    @property
    def failures(self) -> int:
        return self._failures

    def reset(self) -> None:
        self._failures = 0

    def ceiling(self) -> float:
        """The un-jittered delay the next `next_delay` draws below."""
        if self.initial == 0:
            return 0.0
        # Bound the exponent: 2**1024 overflows a float long before anyone waits that long.
        return min(self.cap, self.initial * 2.0 ** min(self._failures, 64))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self._failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)
