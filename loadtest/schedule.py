"""Open-model (constant arrival rate) scheduling: requests leave on a fixed timetable.

Like k6's constant-arrival-rate executor: stage k sends `rate` requests per second for its
duration, the i-th at `stage start + i / rate`, whatever happened to the earlier ones. A slow or
timing-out target does not lower the offered load (a closed model, where N users each wait for an
answer before sending again, would: its load falls exactly when the system is saturated).

Each request runs on its own worker thread; the scheduler only dispatches. Concurrency is capped
by `max_in_flight` (k6's maxVUs): a request due while the cap is reached is recorded as dropped,
never delayed, so a dropped count is visible instead of a silently lower rate.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from envconfig import parse_duration

_STAGE = re.compile(r"\s*(?P<rate>\d+(?:\.\d+)?)\s*(?:rps)?\s*:\s*(?P<duration>\S+)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Stage:
    rate: float       # requests per second
    duration: float   # seconds

    @property
    def planned(self) -> int:
        """Requests this stage sends: rate x duration (k6 starts the first at the stage's start)."""
        return math.floor(self.rate * self.duration + 1e-9)

    @property
    def label(self) -> str:
        return f"{self.rate:g}rps:{self.duration:g}s"  # seconds, as the ship log writes them


def parse_stage(text: str) -> Stage:
    """'10rps:90s' (or '10:90s', '0.5rps:2m') -> Stage(10, 90)."""
    m = _STAGE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a stage: write RATE rps:DURATION, e.g. 10rps:90s")
    rate, duration = float(m["rate"]), float(parse_duration(m["duration"]))
    if rate <= 0 or duration <= 0:
        raise ValueError(f"{text!r}: rate and duration must be positive")
    if math.floor(rate * duration + 1e-9) < 1:
        raise ValueError(f"{text!r} sends no request: rate x duration must be at least 1")
    return Stage(rate, duration)


R20_PROFILE = (Stage(10, 90), Stage(5, 60))  # the ship log's R20: 10 RPS x 90 s, then 5 RPS x 60 s


def profile_name(stages: tuple[Stage, ...] | list[Stage]) -> str:
    """'10rps90s-5rps60s': for file names."""
    return "-".join(f"{s.rate:g}rps{s.duration:g}s" for s in stages)


@dataclass(frozen=True)
class Planned:
    test: int        # 1-based stage number (the ship log's "Test" column)
    seq: int         # 0-based, over the whole run
    offset: float    # seconds after the run's start when it is due


def timetable(stages: tuple[Stage, ...] | list[Stage]) -> list[Planned]:
    out: list[Planned] = []
    start = 0.0
    for n, stage in enumerate(stages, 1):
        for i in range(stage.planned):
            out.append(Planned(n, len(out), start + i / stage.rate))
        start += stage.duration
    return out


@dataclass
class Result:
    """What one request got. `latency` is seconds from sending to the last byte (or to the failure)."""

    status: int               # HTTP status, 0 when there was no answer
    latency: float
    outcome: str              # ok | http (a status outside 200-399) | timeout | error
    error: str = ""


@dataclass
class Record:
    test: int
    seq: int
    planned: float            # due, seconds after the start
    sent: float | None        # when it actually left (None: dropped)
    status: int = 0
    latency: float | None = None
    outcome: str = "dropped"  # ok | http | timeout | error | dropped
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"

    @property
    def done(self) -> float | None:
        return None if self.sent is None or self.latency is None else self.sent + self.latency

    def to_json(self) -> dict:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"test": self.test, "seq": self.seq, "planned": r(self.planned), "sent": r(self.sent),
                "latency": r(self.latency), "status": self.status, "outcome": self.outcome, "error": self.error}


class OpenModelRunner:
    """Dispatch every planned request at its time on a worker thread; never wait for answers
    before sending the next. `send()` performs one request (with its own timeout)."""

    def __init__(self, send: Callable[[], Result], *, max_in_flight: int,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[str], None] | None = None, progress_every: float = 10.0) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.send, self.max_in_flight = send, max_in_flight
        self.clock, self.sleep = clock, sleep
        self.progress, self.progress_every = progress, progress_every
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.records: list[Record] = []

    def _one(self, rec: Record) -> None:
        try:
            res = self.send()
        except Exception as exc:  # a bug in send must not vanish in a worker thread
            res = Result(0, 0.0, "error", f"{type(exc).__name__}: {exc}")
        rec.status, rec.latency, rec.outcome, rec.error = res.status, res.latency, res.outcome, res.error
        with self._lock:
            self.in_flight -= 1

    def _report(self, t: float, stage: str) -> None:
        if self.progress is None:
            return
        with self._lock:
            done = [r for r in self.records if r.latency is not None]
            failed = sum(r.failed for r in done)
            sent = sum(r.sent is not None for r in self.records)
            line = (f"t={t:5.0f}s {stage}: sent {sent}, in flight {self.in_flight}, answered {len(done)}, "
                    f"failed {failed}")
        self.progress(line)

    def run(self, stages: tuple[Stage, ...] | list[Stage]) -> list[Record]:
        plan = timetable(stages)
        labels = {n: s.label for n, s in enumerate(stages, 1)}
        pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="loadtest")
        t0 = self.clock()
        next_report = self.progress_every
        try:
            for p in plan:
                delay = t0 + p.offset - self.clock()
                if delay > 0:
                    self.sleep(delay)
                now = self.clock() - t0
                rec = Record(p.test, p.seq, p.offset, now)
                with self._lock:
                    self.records.append(rec)
                    if self.in_flight >= self.max_in_flight:
                        rec.sent = None  # dropped: never sent late instead
                        continue
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                pool.submit(self._one, rec)
                if now >= next_report:
                    self._report(now, f"test {p.test} ({labels[p.test]})")
                    next_report += self.progress_every
            while True:  # the schedule is done: wait for the answers (each request has its own timeout)
                with self._lock:
                    if self.in_flight == 0:
                        break
                self.sleep(0.1)
                now = self.clock() - t0
                if now >= next_report:
                    self._report(now, "draining")
                    next_report += self.progress_every
        except BaseException:  # Ctrl-C: stop sending; requests in flight end with their own timeouts
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return self.records
