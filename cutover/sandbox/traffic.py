"""The world's callers, over real HTTPS to the production listener.

enrolled     `sandbox-agents`: API key + enrolled client certificate, steady
noise        no key, no certificate (scanners): every third tick of the enrolled caller
unenrolled   `brainstorm-cli` (the `unenrolled-caller` scenario): API key, NO certificate, a
             steady rate from the moment the gateway parameter becomes strict (the flip) on.
             Every answer is recorded with its time, so a benchmark can count the refused
             requests and the seconds of exposure per incident.
"""

from __future__ import annotations

import http.client
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any


def post(host: str, port: int, ctx: ssl.SSLContext, route: str, *, key: str | None, agent: str,
         headers: dict[str, str] | None = None, timeout: float = 5) -> int:
    """One POST over a fresh TLS connection; 0 for a connection or TLS failure."""
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    h = {"User-Agent": agent, "Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    try:
        conn.request("POST", route, body=b"{}", headers=h)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


INCIDENT_QUIET = 2.0  # seconds of served-only answers that end an incident


@dataclass
class CallerLog:
    """What one caller got, with timestamps (epoch seconds)."""

    name: str
    answers: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, at: float | None = None) -> None:
        with self.lock:
            self.answers.append((at if at is not None else time.time(), status))

    def summary(self) -> dict[str, Any]:
        with self.lock:
            answers = list(self.answers)
        refused = [t for t, s in answers if s == 403]
        served = [t for t, s in answers if 200 <= s < 300]
        incidents: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        # An incident runs from a first 403 to the first served request after its last 403. During a
        # rolling deployment old and new tasks answer in turn, so served requests between refusals do
        # not end it: only INCIDENT_QUIET seconds of nothing but served requests do ("closed").
        for t, s in answers:
            if s == 403:
                again = current["served_again_at"] if current else None
                if current is not None and again is not None and t - again >= INCIDENT_QUIET:
                    incidents.append(current)
                    current = None
                if current is None:
                    current = {"first_refused_at": t, "refused": 0}
                current.update(refused=current["refused"] + 1, last_refused_at=t, served_again_at=None,
                               exposure_seconds=None, closed=False)
            elif 200 <= s < 300 and current is not None:
                if current["served_again_at"] is None:
                    current["served_again_at"] = t
                    current["exposure_seconds"] = round(t - current["first_refused_at"], 3)
                current["closed"] = t - current["served_again_at"] >= INCIDENT_QUIET
        if current is not None:
            incidents.append(current)
        return {"caller": self.name, "sent": len(answers), "refused": len(refused), "served": len(served),
                "errors": sum(1 for _, s in answers if s == 0),
                "other": sum(1 for _, s in answers if s not in (0, 403) and not 200 <= s < 300),
                "first_at": answers[0][0] if answers else None,
                "first_refused_at": refused[0] if refused else None,
                "last_refused_at": refused[-1] if refused else None,
                "incidents": incidents,
                "answers": [[round(t, 3), s] for t, s in answers[-2000:]]}


class Traffic:
    def __init__(self, url: str, pki: Any, routes: tuple[str, ...], *, keys: dict[str, str],
                 unenrolled_from: threading.Event | None, interval: float = 0.4,
                 unenrolled_interval: float = 0.2) -> None:
        self.routes, self.interval, self.keys = routes, interval, keys
        self.unenrolled_from, self.unenrolled_interval = unenrolled_from, unenrolled_interval
        host, port = url.removeprefix("https://").split(":")
        self.host, self.port = host, int(port)
        self.plain = ssl.create_default_context(cafile=pki.ca_cert)
        self.enrolled_ctx = ssl.create_default_context(cafile=pki.ca_cert)
        agent = pki.clients["sandbox-agents"]
        self.enrolled_ctx.load_cert_chain(agent.cert, agent.key)
        self.enrolled = CallerLog("sandbox-agents")
        self.noise = CallerLog("(no API key)")
        self.unenrolled = CallerLog("brainstorm-cli")
        self._stop = threading.Event()
        self._rng = random.Random(7)
        self._threads = [threading.Thread(target=self._run, name="sandbox-traffic", daemon=True)]
        if unenrolled_from is not None:
            self._threads.append(threading.Thread(target=self._run_unenrolled, name="sandbox-unenrolled",
                                                  daemon=True))
        for t in self._threads:
            t.start()

    @property
    def sent(self) -> int:
        return len(self.enrolled.answers)

    def request(self, ctx: ssl.SSLContext, route: str, key: str | None, agent: str) -> int:
        return post(self.host, self.port, ctx, route, key=key, agent=agent)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():  # the first request goes out at once: traffic is already flowing
            route = self._rng.choice(self.routes)
            self.enrolled.record(self.request(self.enrolled_ctx, route, self.keys["sandbox-agents"],
                                              "sandbox-agent/1.4"))
            if tick % 3 == 0:
                self.noise.record(self.request(self.plain, route, None, "python-requests/2.32"))
            tick += 1
            if self._stop.wait(self.interval):
                return

    def _run_unenrolled(self) -> None:
        assert self.unenrolled_from is not None
        while not self.unenrolled_from.wait(0.05):
            if self._stop.is_set():
                return
        nxt = time.monotonic()
        while not self._stop.is_set():  # a steady rate: the schedule does not drift with slow answers
            route = self._rng.choice(self.routes)
            at = time.time()
            self.unenrolled.record(self.request(self.plain, route, self.keys["brainstorm-cli"], "brainstorm-cli/0.9"),
                                   at)
            nxt += self.unenrolled_interval
            if self._stop.wait(max(nxt - time.monotonic(), 0)):
                return

    def summary(self) -> dict[str, Any]:
        return {"enrolled": self.enrolled.summary(), "noise": self.noise.summary(),
                "unenrolled": self.unenrolled.summary() if self.unenrolled_from is not None else None}

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
