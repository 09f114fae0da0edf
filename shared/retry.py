"""The one retry/backoff helper: exponential delays with a cap and optional jitter.

    backoff = Backoff(first=0.2, cap=30.0)
    while True:
        try:
            work()
            backoff.reset()                 # success: the next failure starts small again
        except Transient:
            backoff.sleep()                 # or, in a coroutine: await backoff.wait()

``next_delay()`` gives the delay without sleeping, for loops that wait on something else (an
event, a deadline) at the same time. The object holds no clock and no thread: one per loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)
class Backoff:
    """Delays ``first``, ``first*factor``, ... up to ``cap``, each scaled by a random factor in
    ``[1-jitter, 1+jitter]`` so that many clients failing together do not retry in step.

    ``cap`` may be changed between calls (e.g. when it follows a heartbeat the server sets).
    """

    first: float = 0.2
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    _current: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap <= 0 or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"backoff needs first > 0, cap > 0, factor >= 1, 0 <= jitter < 1: {self!r}")

    def next_delay(self) -> float:
        """The delay before the next attempt (jittered); the one after it grows by ``factor``."""
        delay = min(self.cap, self.first if self._current is None else self._current)
        self._current = min(self.cap, delay * self.factor)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits ``first`` again."""
        self._current = None

    def sleep(self) -> float:
        """Sleep the next delay (threads, CLI loops); returns it."""
        delay = self.next_delay()
        time.sleep(delay)
        return delay

    async def wait(self) -> float:
        """Sleep the next delay without blocking the event loop; returns it."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
