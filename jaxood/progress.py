"""Progress lines with rate and ETA for long loops (printed at most every `every` seconds, by the first host).

`unit` is a plural ending in "s" ("steps"): a rate under one a second is shown as seconds per step. The rate, and
the ETA from it, leave out the first update's time, which holds a loop's one-off start (compiling the first batch's
call, opening files) once a later update has come.

In a multi-host job every host runs the same loop in step; one host's line speaks for all of them.
"""

from __future__ import annotations

import sys
import time

from jaxood import distributed


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, label: str, total: int, unit: str = "items", every: float = 10.0, stream=None):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream = stream or sys.stdout
        self.start = self.last = time.monotonic()
        self.done = 0
        self.first: tuple[int, float] | None = None  # (done, time) at the first update
        self.shown = distributed.is_first_host()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.first is None:
            self.first = (self.done, now)
        if self.shown and (now - self.last >= self.every or self.done >= self.total):
            self.last = now
            elapsed = now - self.start
            first_done, first_at = self.first
            done, since = (self.done - first_done, now - first_at) if self.done > first_done else (self.done, elapsed)
            rate = done / since if since > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            # Under one a second, the time each takes: the paper config's 282 s steps on a CPU read "0.0 steps/s".
            pace = f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/{self.unit[:-1]}"
            print(
                f"[{self.label}] {self.done}/{self.total} {self.unit} ({pace}, "
                f"elapsed {_fmt(elapsed)}, ETA {_fmt(eta)})",
                file=self.stream,
                flush=True,
            )
