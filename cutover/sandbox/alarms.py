"""The sandbox's CloudWatch side: alarm names, and a metric filter on legitimate mesh-write 403s.

The stack (CDK) adds a metric filter and an alarm on LEGITIMATE mesh-write 403s: status 403, path
under /v1/agent/, a caller present, no cutover run id, and a user agent that is not the tool's
probe. moto's Logs neither evaluates metric filters nor feeds alarms, so the world plays both:
every access line the log shipper puts into the group passes through `LegitimateWriteFilter`, and
a match sets the alarm to ALARM in moto's CloudWatch (SetAlarmState). Like a 1-minute alarm that
treats missing data as not breaching, it goes back to OK after one period without a match (the
period scaled like every other sandbox duration). The filter is written from the alarm's
definition, independently of the tool's classifier, so a bug in one is not copied into the other.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from cutover.mtls import MESH_WRITE_PREFIX, PROBE_MARK
from envconfig import EnvConfig


def legitimate_403_alarm_name(cfg: EnvConfig) -> str:
    """The one place the sandbox names the legitimate-403 alarm (the stack's name when it has one)."""
    name = getattr(cfg.observability, "alarm_legitimate_403", None)
    return name if isinstance(name, str) and name else f"{cfg.observability.alarm_prefix}-legitimate-mesh-write-403"


def deployment_alarm_names(cfg: EnvConfig) -> tuple[str, ...]:
    """The service's deployment alarms (rollback enabled): the stack's list when the config has
    one, else the legitimate-403 alarm with the 5xx and unhealthy-host alarms (issue 10)."""
    deployment = getattr(cfg.service, "deployment", None)
    names = getattr(deployment, "alarms", None) or getattr(deployment, "alarm_names", None)
    if names and all(isinstance(n, str) for n in names):
        return tuple(names)
    o = cfg.observability
    return (legitimate_403_alarm_name(cfg), o.alarm_5xx, o.alarm_unhealthy)


def is_legitimate_403(message: str, cfg: EnvConfig) -> bool:
    """The metric filter's semantics on one log event."""
    f = cfg.access_log
    start = message.find("{")
    if start < 0:
        return False
    try:
        data = json.loads(message[start:])
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    try:
        status = int(data.get(f.status_field, 0))
    except (TypeError, ValueError):
        return False
    return (status == 403 and str(data.get(f.route_field) or "").startswith(MESH_WRITE_PREFIX)
            and bool(data.get(f.caller_field))
            and not (data.get(f.run_id_field) and str(data.get(f.user_agent_field) or "").startswith(PROBE_MARK)))


class LegitimateWriteFilter:
    """Metric filter + alarm evaluation for the legitimate-403 alarm, against moto's CloudWatch."""

    def __init__(self, cfg: EnvConfig, cloudwatch: Any, *, period: float) -> None:
        self.cfg, self.cloudwatch, self.period = cfg, cloudwatch, period
        self.alarm = legitimate_403_alarm_name(cfg)
        self.matches: list[tuple[float, str]] = []  # (event time, stream)
        self.transitions: list[tuple[float, str]] = []
        self._last_match = 0.0
        self._state = "OK"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-metric-filter", daemon=True)
        self._thread.start()

    def ingest(self, stream: str, ts_ms: int, message: str) -> None:
        if not is_legitimate_403(message, self.cfg):
            return
        with self._lock:
            self.matches.append((ts_ms / 1000, stream))
            self._last_match = time.monotonic()
            fire = self._state != "ALARM"
            self._state = "ALARM"
        if fire:
            self._set("ALARM", f"Threshold Crossed: a legitimate mesh-write 403 in {stream}")

    def _set(self, state: str, reason: str) -> None:
        self.transitions.append((time.time(), state))
        with contextlib.suppress(Exception):  # moto going away at shutdown
            self.cloudwatch.set_alarm_state(AlarmName=self.alarm, StateValue=state, StateReason=reason)

    def _run(self) -> None:
        while not self._stop.wait(min(self.period / 4, 0.25)):
            with self._lock:
                clear = self._state == "ALARM" and time.monotonic() - self._last_match >= self.period
                if clear:
                    self._state = "OK"
            if clear:
                self._set("OK", "Threshold Crossed: no legitimate mesh-write 403 for one period")

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"alarm": self.alarm, "state": self._state, "matches": len(self.matches),
                    "transitions": [[round(t, 3), s] for t, s in self.transitions]}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
