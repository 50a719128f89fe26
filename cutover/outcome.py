"""What the engine works with and returns: the console it talks to, its exceptions, its options
and its typed outcome (the CLI renders it; the engine does no file IO)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cutover.exitcodes import ExitCode
from cutover.lockstore import LockView
from cutover.mtls import GateVerdict
from cutover.probes import ProbeResult
from cutover.watch import WatchSummary
from cutover_core.journal import (
    Journal,
    RunState,
)

CONFIRM_TIMEOUT = 15 * 60          # an unanswered confirmation changes nothing
INTERRUPT_PROMPT_TIMEOUT = 60      # an unanswered Ctrl-C prompt goes on watching
STEP_OF = {RunState.FLIPPING: "flip", RunState.DEPLOYING: "redeploy", RunState.PROBING: "probe",
           RunState.WATCHING: "watch"}


class Pending(Protocol):
    def answer(self) -> str | None: ...   # None: not (yet) answered


class Ui(Protocol):
    interactive: bool

    def step(self, name: str, status: str, detail: str = "", seconds: float | None = None) -> None: ...
    def info(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def progress(self, text: str) -> None: ...
    def gate(self, verdict: GateVerdict) -> None: ...
    def probes(self, results: list[ProbeResult]) -> None: ...
    def ask(self, prompt: str, choices: tuple[str, ...]) -> Pending: ...


ProbeFn = Callable[..., list[ProbeResult]]


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C without a terminal (journal, lock kept, no prompt)."""


class NeedsRollback(Exception):
    """Something after the flip went wrong: put the previous mode back."""


class Stop(Exception):
    """The run ends here without (further) change to production."""

    def __init__(self, code: ExitCode, state: str, message: str, next_commands: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.state, self.message = code, state, message
        self.next_commands = next_commands or []


@dataclass
class Options:
    target: str = "strict"
    dry_run: bool = False
    yes: bool = False
    watch: float | None = None   # None: the config's window
    poll: float | None = None
    break_lock: bool = False
    skip_staging: str | None = None   # the reason to cut over without a finished cutover of cfg's `after` env


@dataclass
class StatusView:
    mode: str
    parameter: str
    version: int
    deployments: list[dict[str, Any]]
    running: int
    desired: int
    lock: LockView | None
    run: Journal | None
    next_commands: list[str]
    strategy: str = "rolling"
    service_deployment: dict[str, Any] | None = None  # canary/blue_green: status, stage, traffic split


@dataclass
class Outcome:
    env: str
    code: ExitCode = ExitCode.FAILED
    state: str = ""
    message: str = ""
    run_id: str | None = None
    journal: Journal | None = None
    gate: GateVerdict | None = None
    plan: str | None = None
    probes: list[ProbeResult] = field(default_factory=list)
    rollback_probes: list[ProbeResult] = field(default_factory=list)
    watch: WatchSummary | None = None
    manual: list[str] = field(default_factory=list)          # exit 5: restore by hand
    next_commands: list[str] = field(default_factory=list)   # how to go on
    config_mode: str | None = None    # what config/<env>.yaml should say now (the CLI writes it)
    restore_document: str | None = None  # exit 5 with a foreign version: the document to put back
    status: StatusView | None = None
    warnings: list[str] = field(default_factory=list)

    def end(self, code: ExitCode, state: str, message: str) -> Outcome:
        self.code, self.state, self.message = code, state, message
        return self
