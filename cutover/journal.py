"""The lock and the journal, both kept in AWS (SSM), so any machine can take over after a crash.

- lock:    /brainstorm-router/<env>/cutover/lock     created with Overwrite=False (atomic)
- journal: /brainstorm-router/<env>/cutover/journal  the current (or last) run, rewritten after
           every step; SSM's version history keeps earlier runs.

Write-ahead: each step records its *intent* before acting and its result after, so a crash in
between is visible as a step 'started' but not 'done', never as nothing.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from cutover.aws import Aws, dumps

RUNNING, DONE, ROLLED_BACK, ROLLBACK_FAILED, INTERRUPTED, STOPPED = (
    "running", "done", "rolled_back", "rollback_failed", "interrupted", "stopped")
ACTIVE_STATES = (RUNNING, INTERRUPTED, ROLLBACK_FAILED)


class LockHeld(Exception):
    def __init__(self, holder: dict[str, Any], expired: bool) -> None:
        self.holder, self.expired = holder, expired
        who = f"run {holder.get('run_id')} by {holder.get('operator')} since {holder.get('started_iso')}"
        hint = ("it expired: pass --break-lock to take it over" if expired else
                f"it expires at {holder.get('expires_iso')}; check `python -m cutover status`")
        super().__init__(f"another cutover holds the lock ({who}); {hint}")


@dataclass
class Journal:
    run_id: str
    env: str
    operator: str
    action: str              # "mtls" | "rollback"
    target: str              # the mode this run moves to
    previous_mode: str
    parameter: str
    started: float
    previous_version: int | None = None
    new_version: int | None = None
    deployment_id: str | None = None
    watch_until: float | None = None
    state: str = RUNNING
    steps: list[dict[str, Any]] = field(default_factory=list)

    def record(self, step: str, status: str, at: float, detail: str = "") -> None:
        self.steps.append({"step": step, "status": status, "at": round(at, 3), "detail": detail[:200]})

    def last(self, step: str) -> str | None:
        """The last status recorded for `step`, or None if it never started."""
        for s in reversed(self.steps):
            if s["step"] == step:
                return s["status"]
        return None

    @property
    def last_step(self) -> dict[str, Any] | None:
        return self.steps[-1] if self.steps else None

    @classmethod
    def from_json(cls, text: str) -> Journal:
        return cls(**json.loads(text))


SSM_STANDARD_LIMIT = 4096


def fit(journal: Journal, limit: int = SSM_STANDARD_LIMIT) -> str:
    """The journal as JSON within a standard parameter's 4 KB. When a long rollback story would not
    fit, the oldest steps' details are shortened first; the step names, statuses, times and every
    version number are always kept."""
    data = asdict(journal)
    text = dumps(data)
    for step in data["steps"]:
        if len(text) <= limit:
            break
        step["detail"] = step["detail"][:24]
        text = dumps(data)
    if len(text) > limit:
        for step in data["steps"]:
            step["detail"] = ""
        text = dumps(data)
    return text


class StateStore:
    def __init__(self, aws: Aws, *, lock_parameter: str, journal_parameter: str) -> None:
        self.aws = aws
        self.lock_parameter, self.journal_parameter = lock_parameter, journal_parameter

    # ------------------------------------------------------------------ lock

    def read_lock(self) -> dict[str, Any] | None:
        p = self.aws.find_parameter(self.lock_parameter)
        return json.loads(p.value) if p else None

    def acquire(self, *, run_id: str, operator: str, now: float, ttl: float, iso: Any,
                break_lock: bool = False, take_over: str | None = None) -> str:
        """Take the lock; returns its token. `take_over=run_id` lets resume/rollback adopt their
        own run's lock; the process that held it notices (`holds`) and stops acting."""
        token = secrets.token_hex(8)
        body = {"run_id": run_id, "operator": operator, "started": now, "expires": now + ttl,
                "started_iso": iso(now), "expires_iso": iso(now + ttl), "token": token}
        for _ in range(2):
            if self.aws.create_parameter(self.lock_parameter, dumps(body)):
                return token
            holder = self.read_lock()
            if holder is None:
                continue  # released between our two calls: try again
            expired = float(holder.get("expires", 0)) <= now
            mine = take_over is not None and holder.get("run_id") == take_over
            if mine or (expired and break_lock):
                self.aws.delete_parameter(self.lock_parameter)
                continue
            raise LockHeld(holder, expired)
        raise LockHeld(self.read_lock() or {}, False)

    def holds(self, token: str | None) -> bool:
        holder = self.read_lock()
        return token is None or bool(holder and holder.get("token") == token)

    def release(self, run_id: str) -> bool:
        holder = self.read_lock()
        if holder and holder.get("run_id") == run_id:
            self.aws.delete_parameter(self.lock_parameter)
            return True
        return False

    # ------------------------------------------------------------------ journal

    def save(self, journal: Journal) -> None:
        self.aws.put_parameter(self.journal_parameter, fit(journal),
                               description="brainstorm-router cutover journal (python -m cutover status)")

    def load(self) -> Journal | None:
        p = self.aws.find_parameter(self.journal_parameter)
        return Journal.from_json(p.value) if p else None
