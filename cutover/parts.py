"""The engine's shared parts: its collaborators (AWS, clock, sleep, probes, console, lock,
journal) and the small moves every step makes (record and save, wait while watching, tick).

The engine is assembled from mixins over this base, one module per concern: planner (preflight,
gate, confirm), forward (flip, redeploy, probe, proof, watch, finish), shifting (ECS-native
canary / blue-green), rollback (the restore rule, the redeploy, verification), engine (the state
machine and the entry points)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from cutover.aws import Aws, Parameter
from cutover.lockstore import JournalStore, Lock, iso
from cutover.outcome import (
    NeedsRollback,
    Options,
    Outcome,
    ProbeFn,
    Ui,
)
from cutover.probes import ProbeResult, ProbeSpec
from cutover.watch import Watcher, WatchSummary
from cutover_core.flag import read_mode
from cutover_core.journal import (
    Journal,
    RunState,
)
from envconfig import EnvConfig, format_duration

PARAMETER_CHECK_TOLERANCE = 3  # consecutive failed reads of the parameter before the run gives up


class Parts:
    cfg: EnvConfig
    aws: Aws
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    probe_fn: ProbeFn
    probe_spec: ProbeSpec
    ui: Ui
    lock: Lock
    journal: JournalStore
    window: float
    poll: float
    watcher: Watcher | None
    aws_offset: float = 0.0   # AWS's clock minus ours (log timestamps are AWS's)

    def __init__(self, cfg: EnvConfig, *, aws: Aws, clock: Callable[[], float], sleep: Callable[[float], None],
                 probe: ProbeFn, probe_spec: ProbeSpec, ui: Ui, run_id: Callable[[], str] | None = None) -> None:
        self.cfg, self.aws, self.clock, self.sleep = cfg, aws, clock, sleep
        self.probe_fn, self.probe_spec, self.ui = probe, probe_spec, ui
        self.lock = Lock(aws, cfg.lock_parameter, ttl=cfg.cutover.lock_ttl, clock=clock)
        self.journal = JournalStore(aws, cfg.journal_parameter, self.lock)
        self._new_run_id = run_id or self._default_run_id
        self.window = cfg.cutover.watch
        self.poll = cfg.cutover.poll
        self.watcher: Watcher | None = None
        self._last_tick = float("-inf")
        self._foreign_noted: int | None = None  # a foreign version still in the run's mode, said once
        self._param_check_failures = 0

    def _default_run_id(self) -> str:
        import datetime as dt
        stamp = dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.cfg.environment}-{stamp}-{secrets.token_hex(2)}"

    def _apply(self, opts: Options) -> None:
        if opts.watch is not None:
            self.window = opts.watch
        if opts.poll is not None:
            self.poll = opts.poll

    def _cmd(self, command: str) -> str:
        return f"python -m cutover {command} --env {self.cfg.environment}"

    @property
    def svc(self) -> tuple[str, str]:
        return self.cfg.service.cluster_name, self.cfg.service.service_name

    def live(self) -> tuple[Parameter, str]:
        p = self.aws.get_parameter(self.cfg.gateway.parameter_name)
        if p.server_time is not None:
            # Log events carry AWS's timestamps: the watch reads them on AWS's clock. The Date header
            # has a one-second resolution, so only a real skew is corrected.
            skew = p.server_time - self.clock()
            self.aws_offset = skew if abs(skew) > 2 else 0.0
        return p, read_mode(p.value)

    def aws_now(self) -> float:
        return self.clock() + self.aws_offset

    def run_probes(self, mode: str, run_id: str) -> list[ProbeResult]:
        tasks = self.aws.describe_service(*self.svc).get("runningCount", 0)
        return self.probe_fn(self.probe_spec, mode=mode, tasks=tasks, run_id=run_id)

    def _begin(self, j: Journal, step: str) -> float:
        t = self.clock()
        j.record(step, "started", t)
        self.journal.save(j)  # intent first: a crash inside the step is still on record
        return t

    def _done(self, j: Journal, step: str, detail: str, t: float, then: RunState) -> None:
        j.record(step, "done", self.clock(), detail)
        j.transition(then)
        self.journal.save(j)
        self.ui.step(step, "done", detail, self.clock() - t)

    def _save_quietly(self, j: Journal) -> None:
        try:
            self.journal.save(j)
        except Exception as exc:  # the message below still tells the operator; the journal is best effort here
            self.ui.warn(f"could not record it in the journal: {type(exc).__name__}: {exc}")

    def _wait(self, j: Journal, out: Outcome, seconds: float, *, watching: bool) -> None:
        self.sleep(seconds)
        self._tick(j, out, watching=watching)

    def _tick(self, j: Journal, out: Outcome, *, watching: bool, force: bool = False) -> None:
        """Once per poll: keep the lock, read the access log, check the guard alarms."""
        now = self.clock()
        if not force and now - self._last_tick < self.poll:
            return
        self._last_tick = now
        self.lock.keepalive()
        if not watching:
            return
        if self.watcher is not None:
            hit = self.watcher.poll(now + self.aws_offset)
            self._summary(j, out)
            if hit is not None and hit.caller == self.probe_spec.sentinel_caller:
                f = self.cfg.access_log
                raise NeedsRollback(f"the watch is blind: the sentinel's own 403 on {hit.route} was logged without "
                                    f"its marker (no '{f.run_id_field}', user agent not kept in '{f.user_agent_field}'); "
                                    "fix access_log.run_id_field/user_agent_field")
            if hit is not None and j.first_strict_task is None:
                j.first_strict_task = hit.timestamp_ms / 1000  # a caller refused: a strict task had traffic
            if hit is not None:
                raise NeedsRollback(f"legitimate caller {hit.caller!r} got 403 on {hit.route} at "
                                    f"{iso(hit.timestamp_ms / 1000)}")
        if j.new_version is not None and j.state in (RunState.DEPLOYING, RunState.PROBING, RunState.WATCHING):
            self._still_ours(j)
        if j.state == RunState.PROBING and j.strategy != "rolling":
            self._canary_guard(j)
        states = self.aws.alarm_states(self.cfg.observability.guard_alarms)
        firing = [a for a, s in states.items() if s == "ALARM"]
        if firing:
            raise NeedsRollback(f"guard alarm(s) in ALARM during the run: {', '.join(firing)}")

    def _still_ours(self, j: Journal) -> None:
        """Someone else may write the parameter during the run (a `cdk deploy`, a hand in the console).
        If the mode is no longer the run's, the watch would watch a mode that is not live and 'done'
        would be a lie: roll back, whose restore rule writes nothing over their version (the flag is
        already back) but redeploys and proves with probes what runs. Another key edited, the mode
        kept: said once, and the watch goes on."""
        try:
            p, mode = self.live()
        except Exception as exc:  # a blip (throttling beyond retries, a passing AccessDenied) is not a page
            self._param_check_failures += 1
            if self._param_check_failures >= PARAMETER_CHECK_TOLERANCE:
                raise
            self.ui.warn(f"could not read the gateway parameter ({type(exc).__name__}); trying again next poll")
            return
        self._param_check_failures = 0
        if p.version == j.new_version or self._foreign_noted == p.version:
            return
        if mode != j.target:
            raise NeedsRollback(f"someone else changed the gateway parameter during the run: v{p.version} is {mode} "
                                f"(this run wrote v{j.new_version}, {j.target}); new tasks would start {mode}")
        # Still the run's mode now; but a version in between may not have been (a flap between two
        # polls): any task that started then runs the other mode.
        assert j.new_version is not None
        between = [v for v in self.aws.parameter_history(self.cfg.gateway.parameter_name)
                   if j.new_version < v["Version"] < p.version]
        other = next((v for v in sorted(between, key=lambda v: v["Version"])
                      if _mode_of(v.get("Value", "")) != j.target), None)
        if other is not None:
            raise NeedsRollback(f"someone else wrote v{other['Version']} ({_mode_of(other.get('Value', ''))}) and then "
                                f"v{p.version} ({mode}) during the run: tasks that started in between may run "
                                f"{_mode_of(other.get('Value', ''))}")
        self._foreign_noted = p.version
        self.ui.warn(f"v{p.version} of the gateway parameter was written by someone else during the run; it is "
                     f"still {mode}: watching on (its other changes reach the tasks at their next start)")

    def _wait_for_deployment(self, j: Journal, out: Outcome, deployment_id: str, *, label: str,
                             watching: bool) -> str:
        start = self.clock()
        deadline = start + self.cfg.cutover.redeploy_timeout
        while True:
            service = self.aws.describe_service(*self.svc)
            deps = service.get("deployments", [])
            mine = next((d for d in deps if d["id"] == deployment_id), None)
            if mine is None:
                raise NeedsRollback(f"deployment {deployment_id} disappeared (replaced by ECS's own rollback?)")
            state = mine.get("rolloutState", "")
            if state == "FAILED":
                raise NeedsRollback(f"deployment {deployment_id} FAILED: {mine.get('rolloutStateReason', '')}")
            if watching and j.first_strict_task is None and mine.get("runningCount", 0) > 0:
                j.first_strict_task = self.clock()  # a task started with the new value takes traffic
                self.journal.save(j)
            running, desired = service.get("runningCount", 0), service.get("desiredCount", 0)
            if state == "COMPLETED" and len(deps) == 1 and running >= desired:
                return f"deployment {deployment_id} COMPLETED, {running}/{desired} tasks, old tasks drained"
            now = self.clock()
            if now >= deadline:
                raise NeedsRollback(f"deployment {deployment_id} not COMPLETED after "
                                    f"{format_duration(self.cfg.cutover.redeploy_timeout)} (state {state or '?'})")
            self.ui.progress(f"{label}: {state or '?'}, {mine.get('runningCount', 0)}/{mine.get('desiredCount', '?')} "
                             f"new tasks, {len(deps)} deployment(s); {format_duration(deadline - now)} left")
            self._wait(j, out, min(self.poll, max(deadline - now, 0.01)), watching=watching)

    def _summary(self, j: Journal, out: Outcome) -> WatchSummary:
        s = self.watcher.summary if self.watcher else WatchSummary()
        s.window = j.watch_window
        if j.watch_started is not None:
            end = j.watch_until if j.watch_cut_short_after is None else j.watch_started + j.watch_cut_short_after
            s.watched = max(0.0, min(self.clock(), end or self.clock()) - j.watch_started)
        s.cut_short = j.watch_cut_short_after is not None
        out.watch = s
        return s


def _mode_of(text: str) -> str:
    try:
        return read_mode(text)
    except Exception:  # a document the flag cannot be read from is not the run's mode either
        return "unreadable"
