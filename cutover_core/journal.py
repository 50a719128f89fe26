"""The run's journal, typed: what the tool (and the restorer Lambda) records in SSM, and the state
machine every entry point asks what comes next.

Standard library only (the restorer Lambda reads and writes this same journal).

States:

    flipping -> deploying -> probing -> watching -> done
        \\___________\\___________\\__________\\______> rolling_back -> rolled_back
                                                  \\             \\-> rollback_failed -> rolling_back
                                 watching -> watch_cut_short (strict kept, window shortened)
    any forward state -> interrupted (Ctrl-C / SIGTERM; the lock is kept) -> the same state on resume
    flipping -> stopped (nothing changed: e.g. the parameter moved under us before our write)

A crash leaves the state it was in: `deploying` with no process is exactly "interrupted while
deploying", and `rolling_back` with no process is "a rollback to finish".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    FLIPPING = "flipping"
    DEPLOYING = "deploying"
    PROBING = "probing"
    WATCHING = "watching"
    INTERRUPTED = "interrupted"
    DONE = "done"
    WATCH_CUT_SHORT = "watch_cut_short"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    STOPPED = "stopped"


FORWARD = (RunState.FLIPPING, RunState.DEPLOYING, RunState.PROBING, RunState.WATCHING)
UNFINISHED_FORWARD = frozenset({*FORWARD, RunState.INTERRUPTED})
UNFINISHED_ROLLBACK = frozenset({RunState.ROLLING_BACK, RunState.ROLLBACK_FAILED})
UNFINISHED = UNFINISHED_FORWARD | UNFINISHED_ROLLBACK
FINISHED = frozenset({RunState.DONE, RunState.WATCH_CUT_SHORT, RunState.ROLLED_BACK, RunState.STOPPED})

_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.FLIPPING: frozenset({RunState.DEPLOYING, RunState.ROLLING_BACK, RunState.INTERRUPTED, RunState.STOPPED}),
    RunState.DEPLOYING: frozenset({RunState.PROBING, RunState.ROLLING_BACK, RunState.INTERRUPTED, RunState.STOPPED}),
    RunState.PROBING: frozenset({RunState.WATCHING, RunState.DONE, RunState.ROLLING_BACK, RunState.INTERRUPTED,
                                 RunState.STOPPED}),
    RunState.WATCHING: frozenset({RunState.DONE, RunState.WATCH_CUT_SHORT, RunState.ROLLING_BACK,
                                  RunState.INTERRUPTED}),
    RunState.INTERRUPTED: frozenset({*FORWARD, RunState.ROLLING_BACK, RunState.INTERRUPTED}),
    RunState.ROLLING_BACK: frozenset({RunState.ROLLED_BACK, RunState.ROLLBACK_FAILED, RunState.ROLLING_BACK}),
    RunState.ROLLBACK_FAILED: frozenset({RunState.ROLLING_BACK}),
    RunState.DONE: frozenset({RunState.ROLLING_BACK}),
    RunState.WATCH_CUT_SHORT: frozenset({RunState.WATCHING, RunState.ROLLING_BACK}),
    RunState.ROLLED_BACK: frozenset({RunState.ROLLING_BACK}),
    RunState.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass
class Step:
    step: str
    status: str          # started | done | failed | red | info
    at: float
    detail: str = ""


@dataclass
class RestoreRecord:
    """What a rollback did to the gateway parameter (the restore rule's decision)."""

    rule: str                      # exact | flag_only | nothing
    by: str                        # tool | restorer
    at: float
    from_version: int | None = None
    to_version: int | None = None
    foreign_version: int | None = None   # a version this run did not write, kept but for the flag


@dataclass
class Journal:
    run_id: str
    env: str
    operator: str
    target: str                    # the mode this run moves to
    previous_mode: str
    parameter: str
    started: float
    previous_version: int | None = None
    new_version: int | None = None
    parameter_type: str = "String"
    parameter_tier: str = "Standard"
    strategy: str = "rolling"              # rolling | canary | blue_green (service.deployment.strategy)
    deployment_id: str | None = None       # the ECS deployment (ecs-svc/...) this run started
    service_deployment: str | None = None  # its service-deployment ARN (canary / blue_green)
    rollback_deployment_id: str | None = None
    watch_window: float = 0.0
    flipped_at: float | None = None        # the parameter write: the watch reads from here
    first_strict_task: float | None = None  # first task started with the new value took traffic
    watch_started: float | None = None     # the counted window began (all tasks new, probes passed)
    watch_until: float | None = None
    watch_cut_short_after: float | None = None
    sentinel: str = ""                     # verified | unverified (--no-sentinel) | "" (not reached)
    skip_staging: str | None = None
    rollback_reason: str | None = None
    restore: RestoreRecord | None = None
    state: RunState = RunState.FLIPPING
    interrupted_in: RunState | None = None
    steps: list[Step] = field(default_factory=list)

    # ------------------------------------------------------------------ the state machine

    def transition(self, new: RunState) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"run {self.run_id}: {self.state} -> {new} is not a legal transition")
        self.state = new

    def record(self, step: str, status: str, at: float, detail: str = "") -> None:
        self.steps.append(Step(step, status, round(at, 3), detail[:240]))

    def last(self, step: str) -> str | None:
        """The last status recorded for `step`, or None if it never started."""
        for s in reversed(self.steps):
            if s.step == step:
                return s.status
        return None

    def at(self, step: str, status: str = "started") -> float | None:
        for s in self.steps:
            if s.step == step and s.status == status:
                return s.at
        return None

    @property
    def last_step(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def phase(self) -> RunState:
        """Where the run stands, an interruption looked through."""
        return self.interrupted_in if self.state == RunState.INTERRUPTED and self.interrupted_in else self.state

    # ------------------------------------------------------------------ codec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Journal:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}  # a newer writer's extra keys are ignored
        kw["steps"] = [Step(**{k: v for k, v in s.items() if k in ("step", "status", "at", "detail")})
                       for s in data.get("steps", [])]
        if data.get("restore"):
            kw["restore"] = RestoreRecord(**data["restore"])
        kw["state"] = RunState(data.get("state", RunState.FLIPPING))
        if data.get("interrupted_in"):
            kw["interrupted_in"] = RunState(data["interrupted_in"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> Journal:
        return cls.from_dict(json.loads(text))


SSM_STANDARD_LIMIT = 4096


def dumps(data: Any) -> str:
    """Compact JSON for state kept in SSM (4 KB per standard parameter)."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)


def fit(journal: Journal, limit: int = SSM_STANDARD_LIMIT) -> str:
    """The journal as JSON within a standard parameter's 4 KB. When a long story would not fit,
    the oldest steps' details are shortened first, then the oldest steps' details dropped; step
    names, statuses, times, the state and every version number are always kept."""
    data = journal.to_dict()
    text = dumps(data)
    for step in data["steps"]:
        if len(text) <= limit:
            break
        step["detail"] = step["detail"][:24]
        text = dumps(data)
    for step in data["steps"]:
        if len(text) <= limit:
            break
        step["detail"] = ""
        text = dumps(data)
    while len(text) > limit and len(data["steps"]) > 4:
        # Keep the first (why the run began) and the last three (where it is now).
        del data["steps"][1]
        text = dumps(data)
    if len(text) > limit:
        # Free text a caller controls (a route, a caller name, a reason): cut, never the versions.
        for key in ("rollback_reason", "skip_staging", "operator"):
            if isinstance(data.get(key), str) and len(data[key]) > 200:
                data[key] = data[key][:197] + "..."
        text = dumps(data)
    return text
