"""Exponential reconnect delays with jitter (PROTOCOL.md §2, §9)."""

from __future__ import annotations

import random

# §9: jitter only lengthens a delay, by up to this fraction of it.
JITTER = 0.25


class Backoff:
    """Delays that start at `initial`, double on each failure and stop growing at `cap`.

    Each delay is drawn in [d, 1.25 d], d being the doubled delay, so that many watchers
    restarted together do not reconnect in lockstep — and never beyond `cap`: jitter only ever
    lengthens a delay, so no retry comes sooner than `initial` (``SCANARR_RECONNECT_DELAY``),
    and a delay at the cap is the cap. `reset` after a good handshake.
    """

    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None) -> None:
        self.initial = max(initial, 0.0)
        # The cap never shortens the configured delay (§9: "or the configured delay if longer").
        self.cap = max(cap, self.initial)
        self._failures = 0
        self._rng = rng or random.Random()

    @property
    def failures(self) -> int:
        return self._failures

    def reset(self) -> None:
        self._failures = 0

    def ceiling(self) -> float:
        """The un-jittered delay d of the next `next_delay` (which draws in [d, 1.25 d])."""
        if self.initial == 0:
            return 0.0
        # Bound the exponent: 2**1024 overflows a float long before anyone waits that long.
        return min(self.cap, self.initial * 2.0 ** min(self._failures, 64))

    def next_delay(self) -> float:
        base = self.ceiling()
        self._failures += 1
        return self._rng.uniform(base, min(base * (1 + JITTER), self.cap))
