"""The cutover as a state machine over the journal (cutover_core.journal).

    mtls:     read the journal -> lock -> plan (preflight, gate, confirm) -> flip -> redeploy ->
              probe -> watch -> finish; from any forward state a failure rolls back
    resume:   continue whatever the journal says is unfinished (the forward path, or a rollback)
    rollback: restore the previous mode of the active or last run (the restore rule)
    status:   where production and the last run stand, and the next command

Pure orchestration: AWS, the clock, sleep, probes and the console arrive as arguments, so a
30-minute watch runs in milliseconds under test. The engine writes nothing but AWS: it returns
an Outcome (what happened, in typed data) and the CLI renders it and writes files.

One watch for the whole run: from the flip on, every wait (the redeploy, the probes, the window,
an unanswered prompt) polls the access log, so a legitimate caller's 403 triggers the rollback
at once, whatever step the run is in.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from cutover.aws import Aws, Parameter
from cutover.exitcodes import ExitCode
from cutover.lockstore import JournalStore, Lock, LockHeld, LockLost, LockView, iso
from cutover.mtls import GateCounts, GateVerdict, gate_filter_pattern, judge_gate
from cutover.probes import NO_CERT, ProbeResult, ProbeSpec
from cutover.watch import WATCH_FILTER, LogCursor, Watcher, WatchSummary
from cutover_core.flag import MODE_PATH, read_mode, with_mode
from cutover_core.journal import (
    FINISHED,
    FORWARD,
    UNFINISHED,
    UNFINISHED_ROLLBACK,
    Journal,
    RestoreRecord,
    RunState,
)
from cutover_core.restore import EXACT, FLAG_ONLY, NOTHING, plan_restore
from envconfig import EnvConfig, format_duration

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


class Cutover:
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

    # ================================================================== shared reads

    @property
    def svc(self) -> tuple[str, str]:
        return self.cfg.service.cluster_name, self.cfg.service.service_name

    def live(self) -> tuple[Parameter, str]:
        p = self.aws.get_parameter(self.cfg.gateway.parameter_name)
        return p, read_mode(p.value)

    def promotion_problem(self, skip: str | None = None) -> str | None:
        """Staged promotion: why this environment may not go strict yet (None: it may)."""
        promo = self.cfg.cutover.promotion
        if promo is None or skip:
            return None
        fix = f"cut {promo.after} over first (python -m cutover mtls --strict --env {promo.after}), or pass " \
              "--skip-staging \"<reason>\""
        try:
            p = self.aws.find_parameter(self.cfg.cutover.journal_of(promo.after))
        except Exception as exc:  # unreadable is not proof
            return f"cannot read {promo.after}'s journal ({type(exc).__name__}: {exc}); {fix}"
        if p is None:
            return f"no cutover of {promo.after} on record; {fix}"
        j = Journal.from_json(p.value)
        finished = j.at("finish", "done")
        if j.target != "strict" or j.state != RunState.DONE or finished is None:
            return (f"{promo.after}'s last cutover {j.run_id} (-> {j.target}) is {j.state}, not a finished, watched "
                    f"strict cutover; {fix}")
        age = self.clock() - finished
        if age > promo.max_age:
            return (f"{promo.after}'s strict cutover {j.run_id} finished {format_duration(age)} ago, longer than "
                    f"{format_duration(promo.max_age)}; {fix}")
        return None

    def gate(self, service: dict | None = None, *, skip_staging: str | None = None) -> GateVerdict:
        """One pass over the log group for the whole lookback, every pattern in one pre-filter.
        `service`: the ECS description the caller already holds (preflight's), to avoid a re-read."""
        g = self.cfg.cutover.gate
        now = self.clock()
        counts = GateCounts(g, self.cfg.access_log)
        for ev in self.aws.log_events(self.cfg.observability.log_group_name, int((now - g.lookback) * 1000),
                                      int(now * 1000), gate_filter_pattern(g)):
            counts.add(ev["message"])
        service = service or self.aws.describe_service(*self.svc)
        guards = self.cfg.observability.guard_alarms
        return judge_gate(counts, self.cfg.cutover.future_callers, guard_alarms=guards,
                          alarm_states=self.aws.alarm_states(guards), deployments=service.get("deployments", []),
                          running=service.get("runningCount", 0), desired=service.get("desiredCount", 0),
                          promotion=self.promotion_problem(skip_staging), config_file=self.cfg.source or None)

    def run_probes(self, mode: str, run_id: str) -> list[ProbeResult]:
        tasks = self.aws.describe_service(*self.svc).get("runningCount", 0)
        return self.probe_fn(self.probe_spec, mode=mode, tasks=tasks, run_id=run_id)

    # ================================================================== mtls

    def run(self, opts: Options) -> Outcome:
        self._apply(opts)
        out = Outcome(env=self.cfg.environment)
        last = self.journal.load()
        if last is not None and last.state in UNFINISHED:
            return self._refuse_unfinished(out, last)
        run_id = self._new_run_id()
        out.run_id = run_id
        t0 = self.clock()
        operator = self.aws.caller_arn()
        if not opts.dry_run:
            try:
                self.lock.acquire(run_id=run_id, operator=operator, break_lock=opts.break_lock,
                                  finished_run=last.run_id if last is not None else None)
            except LockHeld as exc:
                return out.end(ExitCode.FAILED, "locked", str(exc))
            self.ui.step("lock", "done", f"{self.cfg.lock_parameter} held by run {run_id}", self.clock() - t0)
        try:
            j = self._plan(opts, run_id, operator, last, out, t0)
            self.journal.save(j)  # the run's first write: from here on the journal speaks for it
        except Stop as stop:
            self.lock.release()
            out.next_commands = stop.next_commands
            return out.end(stop.code, stop.state, stop.message)
        except LockLost as lost:
            return out.end(ExitCode.FAILED, "taken_over", str(lost))
        except (Exception, KeyboardInterrupt):
            self.lock.release()  # nothing in production changed (a kill, of course, releases nothing)
            raise
        out.journal = j
        return self._drive(j, out)

    def _refuse_unfinished(self, out: Outcome, last: Journal) -> Outcome:
        out.run_id, out.journal = last.run_id, last
        where = f"run {last.run_id} ({last.previous_mode} -> {last.target}, by {last.operator}) is {last.state}"
        if last.state in UNFINISHED_ROLLBACK:
            out.next_commands = [self._cmd("rollback") + "    # finishes the rollback"]
            if last.state == RunState.ROLLBACK_FAILED:
                out.manual = self.manual_rollback_commands(last)
            why = "its rollback is not finished: production may still run " + last.target
        else:
            out.next_commands = [self._cmd("resume") + "      # continue it", self._cmd("rollback") + "    # or undo it"]
            why = "it is not finished"
        return out.end(ExitCode.FAILED, "unfinished_run",
                       f"refused: {where}; {why}. A new run would act on a production that no run accounts for "
                       "(--break-lock does not change that): go on with the command below")

    def _plan(self, opts: Options, run_id: str, operator: str, last: Journal | None, out: Outcome,
              t0: float) -> Journal:
        """Preflight, gate, confirm: read-only, and each surprise a Stop with nothing changed."""
        cfg = self.cfg
        t = self.clock()
        service = self.aws.describe_service(*self.svc)
        param, mode = self.live()
        deployments = service.get("deployments", [])
        preflight = (f"caller {operator}; {cfg.gateway.parameter_name} v{param.version} mode={mode}; service "
                     f"{service.get('runningCount')}/{service.get('desiredCount')} running, "
                     f"{len(deployments)} deployment(s)")
        self.ui.step("preflight", "done", preflight, self.clock() - t)
        if mode == opts.target:
            out.config_mode = mode
            watched = last is not None and last.target == "strict" and last.state == RunState.DONE
            if mode == "strict" and not watched:
                if last is not None and last.state == RunState.WATCH_CUT_SHORT:
                    why = (f"run {last.run_id}'s watch was cut short after "
                           f"{format_duration(last.watch_cut_short_after or 0)} of {format_duration(last.watch_window)}")
                    nxt = [self._cmd("resume") + "      # watch the rest of the window",
                           self._cmd("rollback") + "    # or go back to " + last.previous_mode]
                else:
                    why = "no run of this tool watched it" + (f" (last run {last.run_id}: {last.state})" if last else "")
                    nxt = [self._cmd("mtls --advisory") + "    # go back to advisory, deliberately"]
                    if last is not None and last.previous_version is not None:
                        nxt.insert(0, self._cmd("rollback") + "    # undo the last run")
                raise Stop(ExitCode.FAILED, "unwatched", f"strict is live (v{param.version}) but unwatched: {why}; "
                           "nothing changed", nxt)
            raise Stop(ExitCode.DONE, "nothing_to_do", f"already {mode}: nothing to do, nothing changed in AWS")
        j = Journal(run_id=run_id, env=cfg.environment, operator=operator, target=opts.target,
                    previous_mode=mode, parameter=cfg.gateway.parameter_name, started=t0,
                    previous_version=param.version, parameter_type=param.type, watch_window=self.window,
                    strategy=cfg.service.deployment.strategy)
        j.record("preflight", "done", self.clock(), f"v{param.version} {mode}")

        if opts.target == "strict":  # --advisory is the deliberate way back: no gate
            t = self.clock()
            verdict = self.gate(service, skip_staging=opts.skip_staging)
            out.gate = verdict
            if opts.skip_staging and cfg.cutover.promotion is not None:
                j.skip_staging = opts.skip_staging
                out.warnings.append(f"staged promotion skipped: {opts.skip_staging}")
            self.ui.step("gate", "GREEN" if verdict.green else "RED",
                         f"{verdict.counts.scanned} event(s) scanned over "
                         f"{format_duration(cfg.cutover.gate.lookback)}", self.clock() - t)
            self.ui.gate(verdict)
            j.record("gate", "done" if verdict.green else "red", self.clock())
            if not verdict.green:
                raise Stop(ExitCode.GATE_RED, "gate_red", "gate RED: " + "; ".join(verdict.reasons))
        elif service.get("runningCount", 0) < 1:
            raise Stop(ExitCode.FAILED, "preflight_failed", "no running tasks: refusing to redeploy blind")

        watch_note = f", watch {format_duration(self.window)}" if opts.target == "strict" else ""
        d = cfg.service.deployment
        how = (f"{d.strategy} deployment ({d.canary_percent:g}% canary, probed through the test listener first)"
               if d.strategy == "canary" else f"{d.strategy} deployment")
        out.plan = (f"set {'.'.join(MODE_PATH)}: {mode} -> {opts.target} in {cfg.gateway.parameter_name} "
                    f"(v{param.version}), force a new {how} of {cfg.service.service_name}, probe{watch_note}; "
                    "roll back on a legitimate 403")
        self.ui.info(f"plan: {out.plan}")
        if opts.dry_run:
            raise Stop(ExitCode.DONE, "dry_run", "dry run: stopped before any change")
        if not opts.yes:
            answer = self._confirm()
            if (answer or "").strip() != cfg.environment:
                raise Stop(ExitCode.FAILED, "not_confirmed",
                           "not confirmed: nothing changed" if answer is not None else
                           f"no answer within {format_duration(CONFIRM_TIMEOUT)}: nothing changed")
        j.record("confirm", "done", self.clock(), "--yes" if opts.yes else "typed")
        return j

    def _confirm(self) -> str | None:
        pending = self.ui.ask(f"type the environment name ({self.cfg.environment}) to proceed", ())
        deadline = self.clock() + CONFIRM_TIMEOUT
        while (answer := pending.answer()) is None:
            if self.clock() >= deadline:
                return None
            self.sleep(1)
            self.lock.keepalive()  # renews every quarter TTL; a prompt can wait longer than the lock
        return answer

    # ================================================================== the forward path

    def _drive(self, j: Journal, out: Outcome) -> Outcome:
        steps = {RunState.FLIPPING: self._flip, RunState.DEPLOYING: self._redeploy,
                 RunState.PROBING: self._probe, RunState.WATCHING: self._watch}
        while True:
            try:
                try:
                    while j.state in FORWARD:
                        steps[j.state](j, out)
                    break
                except KeyboardInterrupt as interrupt:
                    choice = self._interrupted(j, out, interrupt)
                if choice == "continue":
                    continue
                if choice == "rollback":
                    return self._rollback(j, out, f"operator interrupted during {STEP_OF.get(j.state, j.state)} "
                                                  "and chose rollback")
                if choice == "keep":
                    return self._cut_short(j, out)
                return self._leave(j, out)
            except NeedsRollback as why:
                self.ui.step(STEP_OF.get(j.state, str(j.state)), "FAILED", str(why))
                return self._rollback(j, out, str(why))
            except LockLost as lost:
                return self._taken_over(out, lost)
            except Stop as stop:
                j.record(STEP_OF.get(j.state, str(j.state)), "failed", self.clock(), stop.message)
                j.transition(RunState.STOPPED)
                self._save_quietly(j)
                self.lock.release()
                out.next_commands = stop.next_commands
                return out.end(stop.code, stop.state, stop.message)
            except Exception as exc:  # an AWS error that survived the retries, a bug, ...
                name = STEP_OF.get(j.state, str(j.state))
                why = f"{name} failed: {type(exc).__name__}: {exc}"
                self.ui.step(name, "FAILED", why)
                return self._rollback(j, out, why)
        return self._finish(j, out)

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

    def _flip(self, j: Journal, out: Outcome) -> None:
        t = self._begin(j, "flip")
        name = self.cfg.gateway.parameter_name
        current = self.aws.get_parameter(name)
        assert j.previous_version is not None
        if current.version == j.previous_version:
            if j.flipped_at is None:
                j.flipped_at = t
                self.journal.save(j)  # the watch reads from here, even if we die right after the write
            tier = self.aws.prepare_write(name)
            j.parameter_tier = tier
            j.new_version = self.aws.put_parameter(name, with_mode(current.value, j.target), type=current.type,
                                                   tier=tier)
            self.journal.save(j)
            self.aws.label_parameter(name, j.previous_version, f"cutover-{j.run_id}-before")
            self.aws.label_parameter(name, j.new_version, f"cutover-{j.run_id}-after")
            detail = f"{j.previous_mode} -> {j.target}: v{j.previous_version} -> v{j.new_version}"
        else:
            previous = self.aws.get_parameter(name, j.previous_version)
            ours = j.new_version is not None or (
                current.version == j.previous_version + 1 and current.value == with_mode(previous.value, j.target))
            if not ours:
                raise Stop(ExitCode.FAILED, "changed_under_us",
                           f"{name} changed under us: v{j.previous_version} at preflight, v{current.version} now "
                           "(another writer, a `cdk deploy`?); this run wrote nothing: nothing changed. Look at "
                           f"v{current.version}, then start again", [self._cmd("status")])
            j.new_version = j.new_version or current.version
            j.flipped_at = j.flipped_at or t
            detail = f"v{j.new_version} already written by this run (found on resume)"
        self._start_watcher(j)
        self._done(j, "flip", detail, t, RunState.DEPLOYING)

    def _start_watcher(self, j: Journal) -> None:
        if self.watcher is not None or j.target != "strict":
            return  # --advisory refuses nobody: there is no hurt caller to watch for
        group = self.cfg.observability.log_group_name
        cursor = LogCursor(read=lambda lo, hi: self.aws.log_events(group, lo, hi, WATCH_FILTER),
                           start_ms=int((j.flipped_at or self.clock()) * 1000),
                           overlap_ms=int(self.cfg.cutover.overlap * 1000))
        self.watcher = Watcher(cursor, self.cfg.access_log, run_id=j.run_id)
        self._last_tick = float("-inf")

    def _redeploy(self, j: Journal, out: Outcome) -> None:
        t = self._begin(j, "redeploy")
        self._start_watcher(j)
        if not j.deployment_id:  # on resume, wait for the deployment already started
            service = self.aws.force_new_deployment(*self.svc)
            j.deployment_id = next(d for d in service["deployments"] if d.get("status") == "PRIMARY")["id"]
            self.journal.save(j)
        if j.strategy == "rolling":
            detail = self._wait_for_deployment(j, out, j.deployment_id, label="redeploy", watching=True)
        else:
            detail = self._follow_shift(j, out, label="redeploy", watching=True)
        self._done(j, "redeploy", detail, t, RunState.PROBING)

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

    # ------------------------------------------------------------------ ECS-native canary / blue-green

    def _service_deployment(self, j: Journal) -> dict:
        """The service deployment this run started (DescribeServiceDeployments), found once by
        ListServiceDeployments: the newest one in flight after the forced deployment."""
        if j.service_deployment is None:
            briefs = self.aws.list_service_deployments(*self.svc, statuses=("PENDING", "IN_PROGRESS"))
            if not briefs:
                briefs = self.aws.list_service_deployments(*self.svc)
            if not briefs:
                raise NeedsRollback("ECS lists no service deployment for the forced deployment")
            j.service_deployment = briefs[0]["serviceDeploymentArn"]
            self.journal.save(j)
        found = self.aws.describe_service_deployments([j.service_deployment])
        if not found:
            raise NeedsRollback(f"service deployment {j.service_deployment} not found")
        if j.first_strict_task is None and j.state in FORWARD and self._weights(found[0])[0] > 0:
            j.first_strict_task = self.clock()  # production traffic reaches tasks with the new value
        return found[0]

    @staticmethod
    def _weights(sd: dict) -> tuple[float, float]:
        target = sd.get("targetServiceRevision") or {}
        return (float(target.get("requestedProductionTrafficWeight") or 0.0),
                float(target.get("requestedTestTrafficWeight") or 0.0))

    @staticmethod
    def _not_stopped(sd: dict, when: str = "") -> dict:
        """The service deployment, unless ECS rolled it back or stopped it (then: roll back too)."""
        status = sd.get("status", "")
        if status.startswith("ROLLBACK") or status in ("STOPPED", "STOP_REQUESTED"):
            alarms = (sd.get("alarms") or {}).get("triggeredAlarmNames") or []
            raise NeedsRollback(f"ECS {status} the service deployment{when}: {sd.get('statusReason', '')}"
                                + (f" (alarm {', '.join(alarms)})" if alarms else ""))
        return sd

    def _follow_shift(self, j: Journal, out: Outcome, *, label: str, watching: bool) -> str:
        """Follow the service deployment until the new revision takes the test listener's traffic
        (the probes go there before production does) or production's (no test stage seen)."""
        deadline = self.clock() + self.cfg.cutover.redeploy_timeout
        while True:
            sd = self._not_stopped(self._service_deployment(j))
            status, stage = sd.get("status", ""), sd.get("lifecycleStage", "")
            prod, test = self._weights(sd)
            if status == "SUCCESSFUL" or test >= 100 or prod > 0:
                return (f"service deployment {stage or status}: test traffic {test:g}%, production {prod:g}% on the "
                        "new revision")
            now = self.clock()
            if now >= deadline:
                raise NeedsRollback(f"service deployment still {status} {stage} after "
                                    f"{format_duration(self.cfg.cutover.redeploy_timeout)}")
            self.ui.progress(f"{label}: {status} {stage}; production {prod:g}% / test {test:g}% on the new revision; "
                             f"{format_duration(deadline - now)} left")
            self._wait(j, out, min(self.poll, max(deadline - now, 0.01)), watching=watching)

    def _canary_guard(self, j: Journal) -> None:
        """Never more than the canary share of production on strict tasks before the probes passed."""
        if j.strategy == "rolling" or j.state != RunState.PROBING:
            return
        sd = self._not_stopped(self._service_deployment(j))  # ECS rolled back on its own: say so
        prod, _ = self._weights(sd)
        limit = self.cfg.service.deployment.canary_percent or 0.0
        if prod > limit:
            raise NeedsRollback(f"the deployment moved {prod:g}% of production traffic to the new revision before "
                                f"its probes passed (canary limit {limit:g}%)")

    def _new_tasks(self, j: Journal) -> list[dict]:
        """The running tasks started with the new value: all of them once a rolling deployment has
        completed; the new (green) revision's during a canary."""
        tasks = self.aws.running_tasks(*self.svc)
        if j.strategy == "rolling" or not j.deployment_id:
            return tasks
        return [t for t in tasks if t["startedBy"] == j.deployment_id] or tasks

    def _probe_spec(self, j: Journal) -> ProbeSpec:
        """Canary / blue-green: the test listener, which reaches only the new revision."""
        port = self.cfg.service.deployment.test_listener_port
        if j.strategy == "rolling" or not port:
            return self.probe_spec
        url = urlsplit(self.probe_spec.base_url)
        return dataclasses.replace(self.probe_spec, base_url=url._replace(netloc=f"{url.hostname}:{port}").geturl())

    def _probe(self, j: Journal, out: Outcome) -> None:
        t = self._begin(j, "probe")
        self._start_watcher(j)
        results = self._probes_while_watching(j, out, j.target)
        out.probes = results
        self.ui.probes(results)
        bad = [r for r in results if not r.ok]
        total = sum(len(r.statuses) for r in results)
        if bad:
            worst = bad[0]
            msg = (f"{len(bad)} probe group(s) wrong, e.g. {worst.kind} {worst.route}: expected {worst.expect}, "
                   f"got {sorted(set(worst.statuses))}")
            if j.target == "advisory":
                # Rolling "back" to strict would re-break whoever this run is trying to unbreak.
                raise Stop(ExitCode.FAILED, "probe_failed", msg + " (advisory is deployed; investigate the gateway)")
            raise NeedsRollback(msg)
        if j.target != "strict":
            self._done(j, "probe", f"{total} probes as expected for {j.target}", t, RunState.DONE)
            return
        j.record("probe", "done", self.clock(), f"{total} probes as expected for {j.target}")
        self.journal.save(j)
        self.ui.step("probe", "done", f"{total} probes as expected for {j.target}", self.clock() - t)
        t = self.clock()
        proof = self._prove(j, out)
        j.watch_started = self.clock()
        j.watch_until = j.watch_started + j.watch_window
        self._done(j, "proof", proof, t, RunState.WATCHING)

    def _prove(self, j: Journal, out: Outcome) -> str:
        """The watch proves it can see: the sentinel's 403s come back as a hurt caller's would (its
        caller logged, only its marker telling it apart), and every running task's own log stream
        shows a strict 403 of this run. Within the ingestion allowance, or the run rolls back."""
        spec, allowance = self._probe_spec(j), self.cfg.cutover.overlap
        tasks = {t["id"] for t in self._new_tasks(j)}
        deadline = self.clock() + allowance
        extra_round_at = self.clock()
        caller_field = self.cfg.access_log.caller_field
        while True:
            self._tick(j, out, watching=True, force=True)
            w = self.watcher
            assert w is not None
            for stream, access in w.sentinel_lines:
                if access.caller != spec.sentinel_caller:
                    got = f"{caller_field}={access.caller!r}" if access.caller else f"no '{caller_field}'"
                    raise NeedsRollback(
                        f"the watch is blind: the sentinel's 403 on {access.route} ({stream}) was logged with {got}, "
                        f"expected {spec.sentinel_caller!r}; a hurt caller would look unauthenticated. Fix "
                        "access_log.caller_field, or have the gateway resolve the API key before its mTLS check")
            seen = {s.rsplit("/", 1)[-1] for s in w.own_403_streams} | {s.rsplit("/", 1)[-1] for s, _ in w.sentinel_lines}
            missing_tasks = sorted(tasks - seen)
            routes = {a.route for _, a in w.sentinel_lines}
            missing_routes = [r for r in spec.routes if r not in routes] if spec.sentinel_key else []
            if not missing_tasks and not missing_routes:
                break
            now = self.clock()
            if now >= deadline:
                if missing_routes and not routes:
                    raise NeedsRollback(
                        f"the watch is blind: none of the sentinel's requests showed up in "
                        f"{self.cfg.observability.log_group_name} within {format_duration(allowance)} (the "
                        "ingestion allowance, cutover.overlap); check the log group and the access-log fields")
                if missing_routes:
                    raise NeedsRollback(f"the sentinel's 403 never showed up for {', '.join(missing_routes)} within "
                                        f"{format_duration(allowance)}: the watch cannot be trusted on those routes")
                raise NeedsRollback(f"task(s) {', '.join(missing_tasks)} show no strict 403 in their own log stream "
                                    f"within {format_duration(allowance)}: they may have started with the old value")
            if missing_tasks and now - extra_round_at >= self.poll:
                extra_round_at = now  # the load balancer may not have sent a probe to every task yet
                self.probe_fn(spec, mode=j.target, tasks=len(tasks), run_id=j.run_id, kinds=(NO_CERT,))
            # Once a second at most: the canary's bake is running meanwhile, and the lines are near.
            self.sleep(min(self.poll, 1.0, max(deadline - now, 0.01)))
        j.sentinel = "verified" if spec.sentinel_key else "unverified"
        if not spec.sentinel_key:
            out.warnings.append("watch unverified: no sentinel (--no-sentinel): nothing proved that a hurt caller's "
                                "403 would be recognised")
        sentinel = (f"sentinel {spec.sentinel_caller!r} seen as a hurt caller would be on {len(routes)} route(s); "
                    if spec.sentinel_key else "no sentinel (watch unverified); ")
        return f"{sentinel}{len(tasks)}/{len(tasks)} task(s) proven strict from their own log streams"

    def _probes_while_watching(self, j: Journal, out: Outcome, mode: str) -> list[ProbeResult]:
        """Run the probe round in a thread and keep the watch polling until it ends."""
        tasks = len(self._new_tasks(j)) or self.aws.describe_service(*self.svc).get("runningCount", 0)
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            future = pool.submit(self.probe_fn, self._probe_spec(j), mode=mode, tasks=tasks, run_id=j.run_id)
            while True:
                try:
                    return future.result(timeout=0.25)  # real time: the probes are real requests
                except FutureTimeout:
                    self._tick(j, out, watching=True)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _watch(self, j: Journal, out: Outcome) -> None:
        if j.last("watch") is None:
            self._begin(j, "watch")
        self._start_watcher(j)
        assert j.watch_until is not None and j.watch_started is not None
        d = self.cfg.service.deployment
        give_up = j.watch_until + (d.bake or 0) + (d.canary_bake or 0) + self.cfg.cutover.redeploy_timeout
        while True:
            now = self.clock()
            self._tick(j, out, watching=True, force=True)
            remaining = j.watch_until - now
            # Canary / blue-green: the watch spans the deployment's bake, while the old tasks still
            # stand by for an instant rollback; it ends when ECS has finished the deployment.
            finished = j.strategy == "rolling" or self._deployment_finished(j)
            if remaining <= 0 and finished:
                break
            if remaining <= 0 and now >= give_up:
                raise NeedsRollback(f"the service deployment has not finished {format_duration(now - j.watch_until)} "
                                    "after the watch window")
            if remaining > 0:
                self.ui.progress(self.watcher.countdown(remaining) if self.watcher else f"watch: {remaining:.0f}s left")
            else:
                self.ui.progress("watch: window over; watching on through the deployment's bake")
            self._wait(j, out, min(self.poll, remaining) if remaining > 0 else self.poll, watching=True)
        # Events are ingested after their timestamp: read on for the ingestion allowance before
        # declaring success, so a 403 from the window's last seconds is still acted on.
        drain_until = j.watch_until + self.cfg.cutover.overlap
        while (now := self.clock()) < drain_until:
            self.ui.progress(f"watch: window over; reading late events for {format_duration(drain_until - now)}")
            self._wait(j, out, min(self.poll, drain_until - now), watching=True)
        self._tick(j, out, watching=True, force=True)
        s = self._summary(j, out)
        quiet = "" if s.mesh_write_requests else " (no mesh-write traffic: the window proved little)"
        if s.mesh_write_requests and not s.authenticated_requests:
            # A caller field that is never filled would make every 403 look unauthenticated.
            quiet = (f" (WARNING: no request carried '{self.cfg.access_log.caller_field}': check "
                     "access_log.caller_field, or the watch cannot recognise a legitimate caller)")
            self.ui.warn(quiet.strip(" ()"))
            out.warnings.append(quiet.strip(" ()"))
        self._done(j, "watch", f"{format_duration(j.watch_window)} window: {s.mesh_write_requests} mesh-write "
                   f"request(s), no legitimate 403{quiet}", j.at("watch") or self.clock(), RunState.DONE)

    def _deployment_finished(self, j: Journal) -> bool:
        return self._not_stopped(self._service_deployment(j), " during the watch").get("status") == "SUCCESSFUL"

    def _summary(self, j: Journal, out: Outcome) -> WatchSummary:
        s = self.watcher.summary if self.watcher else WatchSummary()
        s.window = j.watch_window
        if j.watch_started is not None:
            end = j.watch_until if j.watch_cut_short_after is None else j.watch_started + j.watch_cut_short_after
            s.watched = max(0.0, min(self.clock(), end or self.clock()) - j.watch_started)
        s.cut_short = j.watch_cut_short_after is not None
        out.watch = s
        return s

    # ------------------------------------------------------------------ waiting, ticking

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
            hit = self.watcher.poll(now)
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
        if j.state == RunState.PROBING and j.strategy != "rolling":
            self._canary_guard(j)
        states = self.aws.alarm_states(self.cfg.observability.guard_alarms)
        firing = [a for a, s in states.items() if s == "ALARM"]
        if firing:
            raise NeedsRollback(f"guard alarm(s) in ALARM during the run: {', '.join(firing)}")

    # ------------------------------------------------------------------ interruptions

    def _interrupted(self, j: Journal, out: Outcome, interrupt: KeyboardInterrupt) -> str:
        """Ctrl-C: on a terminal, ask (and keep watching while the question waits); otherwise leave."""
        if isinstance(interrupt, Terminated) or not self.ui.interactive:
            return "leave"
        watching = j.state == RunState.WATCHING
        if watching:
            prompt, choices = "interrupted: [k]eep strict and stop watching, [r]oll back, [c]ontinue?", ("k", "r", "c")
        else:
            prompt, choices = ("interrupted: [r]oll back now, [l]eave it as it is (resume later), [c]ontinue?",
                               ("r", "l", "c"))
        pending = self.ui.ask(prompt, choices)
        deadline = self.clock() + INTERRUPT_PROMPT_TIMEOUT
        while (answer := pending.answer()) is None:
            if self.clock() >= deadline:
                self.ui.info(f"no answer within {format_duration(INTERRUPT_PROMPT_TIMEOUT)}: continuing")
                return "continue"
            self.sleep(1)
            self._tick(j, out, watching=j.flipped_at is not None)
        return {"k": "keep", "r": "rollback", "l": "leave", "c": "continue"}[answer]

    def _leave(self, j: Journal, out: Outcome) -> Outcome:
        step = STEP_OF.get(j.state, str(j.state))
        j.interrupted_in = j.state
        j.transition(RunState.INTERRUPTED)
        j.record("interrupt", "done", self.clock(), f"during {step}")
        self._save_quietly(j)
        out.next_commands = [self._cmd("status"), self._cmd("resume"), self._cmd("rollback")]
        return out.end(ExitCode.FAILED, "interrupted",
                       f"interrupted during {step}; the lock stays held by {j.run_id}: production may run "
                       f"{j.target}; resume or roll back (commands below)")

    def _cut_short(self, j: Journal, out: Outcome) -> Outcome:
        watched = self.clock() - (j.watch_started or self.clock())
        j.watch_cut_short_after = watched
        note = f"watch cut short after {format_duration(watched)} of {format_duration(j.watch_window)}"
        j.record("watch", "cut-short", self.clock(), note)
        j.transition(RunState.WATCH_CUT_SHORT)
        self._summary(j, out)
        return self._finish(j, out, note=note)

    # ================================================================== endings

    def _finish(self, j: Journal, out: Outcome, note: str = "") -> Outcome:
        try:
            j.record("finish", "done", self.clock(), note)
            self.journal.save(j)
        except LockLost as lost:
            return out.end(ExitCode.FAILED, "taken_over", f"{lost} (not finishing it here; see `status`)")
        self.lock.release()
        out.config_mode = j.target
        what = "deployed, probed and watched" if j.target == "strict" and not note else "deployed and probed"
        message = f"{j.target} is live: v{j.new_version} {what}" + (f"; {note}" if note else "")
        if note:
            out.next_commands = [self._cmd("resume") + "      # watch the rest of the window",
                                 self._cmd("rollback") + "    # or go back"]
        return out.end(ExitCode.DONE, str(j.state), message)

    def _save_quietly(self, j: Journal) -> None:
        try:
            self.journal.save(j)
        except Exception as exc:  # the message below still tells the operator; the journal is best effort here
            self.ui.warn(f"could not record it in the journal: {type(exc).__name__}: {exc}")

    # ================================================================== rollback

    def _needs_redeploy(self, j: Journal) -> bool:
        """Tasks may have read the new value: after our write any task start (ours, a scale-out, a
        replacement) reads it, so the rollback redeploys whenever this run wrote."""
        return (j.deployment_id is not None or j.new_version is not None
                or (j.restore is not None and j.restore.rule != NOTHING))

    def _rollback(self, j: Journal, out: Outcome, reason: str) -> Outcome:
        out.journal, out.run_id = j, j.run_id
        sub = "rollback"
        try:
            self.lock.check()
            self.ui.warn(f"ROLLING BACK: {reason}")
            if j.state != RunState.ROLLING_BACK:
                j.rollback_reason = reason
                j.transition(RunState.ROLLING_BACK)
                j.record("rollback", "started", self.clock(), reason)
                self.journal.save(j)
            blue_serving = False
            if j.strategy != "rolling" and j.service_deployment is not None:
                # First put callers back on the old tasks (they started with the old value): seconds.
                sub = "stop-deployment"
                blue_serving = self._stop_service_deployment(j, out)
            sub = "restore"
            self._restore(j)
            if self._needs_redeploy(j) and not blue_serving:
                sub = "rollback-redeploy"
                self._rollback_redeploy(j, out)
            if self._needs_redeploy(j):
                sub = "rollback-probe"
                self._rollback_probe(j, out)
            j.transition(RunState.ROLLED_BACK)
            j.record("rollback", "done", self.clock())
            self.journal.save(j)
            self.lock.release()
            out.config_mode = j.previous_mode
            foreign = ""
            if j.restore is not None and j.restore.rule == FLAG_ONLY:
                foreign = (f"; v{j.restore.foreign_version} was written by someone else during the run: only the "
                           "flag was put back, their other edits kept")
            return out.end(ExitCode.ROLLED_BACK, str(RunState.ROLLED_BACK),
                           f"rolled back to {j.previous_mode} (v{j.previous_version}'s mode): "
                           f"{j.rollback_reason or reason}{foreign}")
        except LockLost as lost:
            return self._taken_over(out, lost)
        except KeyboardInterrupt:
            j.record("interrupt", "done", self.clock(), f"during {sub}")
            self._save_quietly(j)
            out.next_commands = [self._cmd("rollback") + "    # finishes the rollback (resume does the same)"]
            out.manual = self.manual_rollback_commands(j)
            return out.end(ExitCode.ROLLBACK_FAILED, str(RunState.ROLLING_BACK),
                           f"rollback interrupted during {sub}: production may still run {j.target}. Finish it "
                           "now with the command below; the lock stays held")
        except Exception as exc:
            if j.state == RunState.ROLLING_BACK:
                j.transition(RunState.ROLLBACK_FAILED)
            j.record("rollback", "failed", self.clock(), f"{sub}: {type(exc).__name__}: {exc}")
            self._save_quietly(j)
            out.manual = self.manual_rollback_commands(j, out)
            out.next_commands = [self._cmd("rollback") + "    # retries the rollback once AWS/ECS behave"]
            return out.end(ExitCode.ROLLBACK_FAILED, str(RunState.ROLLBACK_FAILED),
                           f"ROLLBACK FAILED in {sub} ({type(exc).__name__}: {exc}); production may still run "
                           f"{j.target}. Restore by hand NOW (commands below); the lock stays held.")

    def _restore(self, j: Journal) -> None:
        """The restore rule (cutover_core.restore), shared with the restorer Lambda."""
        name = self.cfg.gateway.parameter_name
        assert j.previous_version is not None, "a journal without a previous version was never flipped"
        current = self.aws.get_parameter(name)
        previous = self.aws.get_parameter(name, j.previous_version)
        plan = plan_restore(current_value=current.value, current_version=current.version,
                            previous_value=previous.value, previous_version=j.previous_version,
                            previous_mode=j.previous_mode, run_target=j.target, run_version=j.new_version)
        written = None
        if plan.value is not None:
            tier = self.aws.prepare_write(name)
            written = self.aws.put_parameter(name, plan.value, type=current.type, tier=tier)
            self.aws.label_parameter(name, written, f"cutover-{j.run_id}-rollback")
        if plan.rule != NOTHING or j.restore is None:
            j.restore = RestoreRecord(rule=plan.rule, by="tool", at=self.clock(), from_version=current.version,
                                      to_version=written, foreign_version=plan.foreign_version)
        if plan.rule == EXACT:
            detail = f"v{current.version} -> v{written} (= v{j.previous_version})"
        elif plan.rule == FLAG_ONLY:
            detail = (f"v{current.version} -> v{written}: only meshWritesEnforcement -> {j.previous_mode}; "
                      f"v{plan.foreign_version} was written by someone else, its other edits kept")
            self.ui.warn(f"someone else wrote v{plan.foreign_version} after this run's flip: {plan.note}")
        else:
            detail = f"unchanged: {plan.note}"
        j.record("restore", "done", self.clock(), detail)
        self.journal.save(j)
        self.ui.step("restore", "done", detail)

    def _stop_service_deployment(self, j: Journal, out: Outcome) -> bool:
        """StopServiceDeployment(ROLLBACK): ECS shifts traffic back to the old revision at once.
        True when the old revision serves again (also when ECS had already rolled back on its own);
        False when it is gone (the deployment finished its bake): the rollback then redeploys."""
        t = self.clock()
        sd = self._service_deployment(j)
        status = sd.get("status", "")
        if status in ("PENDING", "IN_PROGRESS"):
            self.aws.stop_service_deployment(j.service_deployment or "", "ROLLBACK")
            j.record("stop-deployment", "started", self.clock(), j.service_deployment or "")
            self.journal.save(j)
        elif not status.startswith("ROLLBACK") and status not in ("STOP_REQUESTED",):
            detail = f"service deployment {status}: the old revision is gone; redeploying the previous mode instead"
            j.record("stop-deployment", "skipped", self.clock(), detail)
            self.journal.save(j)
            self.ui.step("stop-deployment", "skipped", detail)
            return False
        deadline = self.clock() + self.cfg.cutover.redeploy_timeout
        while True:
            status = self._service_deployment(j).get("status", "")
            if status == "ROLLBACK_SUCCESSFUL":
                break
            if status in ("ROLLBACK_FAILED", "STOPPED", "SUCCESSFUL"):
                j.record("stop-deployment", "failed", self.clock(), f"service deployment {status}")
                self.journal.save(j)
                return False
            if self.clock() >= deadline:
                raise RuntimeError(f"the service deployment's rollback is still {status} after "
                                   f"{format_duration(self.cfg.cutover.redeploy_timeout)}")
            self.ui.progress(f"stop-deployment: {status}; traffic shifting back to the old revision")
            self._wait(j, out, min(self.poll, 1.0), watching=False)
        detail = "traffic back on the old revision (it started with the previous value)"
        j.record("stop-deployment", "done", self.clock(), detail)
        self.journal.save(j)
        self.ui.step("stop-deployment", "done", detail, self.clock() - t)
        return True

    def _taken_over(self, out: Outcome, lost: LockLost) -> Outcome:
        """Our token is gone. If the server-side restorer finished the rollback, that is the story
        (exit 4, verified by probes); otherwise another process has the run (exit 1)."""
        self.lock.token = None  # we hold nothing any more: no renewals, no releases
        deadline = self.clock() + 30  # the restorer writes its journal within a second of taking the lock
        while (j := self.journal.load()) is not None and j.state in UNFINISHED and self.clock() < deadline:
            if self.lock.read() is None:
                break  # nobody holds the run: no one is about to write a different story
            self.sleep(1)
        if j is None or j.state != RunState.ROLLED_BACK or j.restore is None or j.restore.by != "restorer":
            return out.end(ExitCode.FAILED, "taken_over", str(lost))
        out.journal, out.run_id = j, j.run_id
        self.ui.warn(f"the restorer rolled the run back server side ({j.rollback_reason}); verifying")
        if j.rollback_deployment_id:  # rolling: the restorer forced a deployment; probe once it is done
            try:
                self._wait_for_deployment(j, out, j.rollback_deployment_id, label="restorer's redeploy",
                                          watching=False)
            except NeedsRollback as why:
                out.manual = self.manual_rollback_commands(j)
                return out.end(ExitCode.ROLLBACK_FAILED, "rollback_failed",
                               f"the restorer rolled back, but its redeploy did not complete: {why}")
        results = self.run_probes(j.previous_mode, j.run_id)
        out.rollback_probes = results
        out.config_mode = j.previous_mode
        bad = [r for r in results if not r.ok]
        if bad:
            out.manual = self.manual_rollback_commands(j)
            return out.end(ExitCode.ROLLBACK_FAILED, "rollback_failed",
                           f"the restorer rolled back, but probes still disagree with {j.previous_mode}: {bad[0].kind} "
                           f"{bad[0].route} got {sorted(set(bad[0].statuses))}; restore by hand (commands below)")
        return out.end(ExitCode.ROLLED_BACK, str(RunState.ROLLED_BACK),
                       f"rolled back to {j.previous_mode} by the restorer (server side): {j.rollback_reason}")

    def _rollback_redeploy(self, j: Journal, out: Outcome) -> None:
        t = self.clock()
        dep = j.rollback_deployment_id
        if dep is not None:  # resumed: is the rollback's own deployment still going?
            deps = self.aws.describe_service(*self.svc).get("deployments", [])
            mine = next((d for d in deps if d["id"] == dep), None)
            if mine is None or mine.get("rolloutState") == "FAILED":
                dep = None
        if dep is None:
            service = self.aws.force_new_deployment(*self.svc)
            dep = next(d for d in service["deployments"] if d.get("status") == "PRIMARY")["id"]
            j.rollback_deployment_id = dep
            j.record("rollback-redeploy", "started", self.clock(), dep)
            self.journal.save(j)
        if j.strategy == "rolling":
            detail = self._wait_for_deployment(j, out, dep, label="rollback redeploy", watching=False)
        else:
            detail = self._follow_rollback_shift(j, out)
        j.record("rollback-redeploy", "done", self.clock(), detail)
        self.journal.save(j)
        self.ui.step("rollback-redeploy", "done", detail, self.clock() - t)

    def _follow_rollback_shift(self, j: Journal, out: Outcome) -> str:
        """The rollback's own canary deployment: done when all production traffic is on it (its
        bake, with the strict tasks standing by, need not be waited for)."""
        deadline = self.clock() + self.cfg.cutover.redeploy_timeout
        while True:
            briefs = self.aws.list_service_deployments(*self.svc)
            newest = briefs[0]["serviceDeploymentArn"] if briefs else None
            sd = self.aws.describe_service_deployments([newest])[0] if newest else {}
            status = sd.get("status", "")
            prod, _ = self._weights(sd)
            if newest != j.service_deployment and (status == "SUCCESSFUL" or prod >= 100):
                return f"service deployment {sd.get('lifecycleStage') or status}: production {prod:g}% on the previous mode"
            if newest != j.service_deployment and (status.startswith("ROLLBACK") or status == "STOPPED"):
                raise RuntimeError(f"ECS {status} the rollback's own deployment: {sd.get('statusReason', '')}")
            if self.clock() >= deadline:
                raise RuntimeError(f"the rollback's deployment is still {status or '?'} after "
                                   f"{format_duration(self.cfg.cutover.redeploy_timeout)}")
            self.ui.progress(f"rollback redeploy: {status} {sd.get('lifecycleStage', '')}; production {prod:g}%")
            self._wait(j, out, self.poll, watching=False)

    def _rollback_probe(self, j: Journal, out: Outcome) -> None:
        t = self.clock()
        results = self.run_probes(j.previous_mode, j.run_id)
        out.rollback_probes = results
        bad = [r for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"after rollback, probes still disagree with {j.previous_mode}: "
                               f"{bad[0].kind} {bad[0].route} got {sorted(set(bad[0].statuses))}")
        detail = f"{sum(len(r.statuses) for r in results)} probes as expected for {j.previous_mode}"
        j.record("rollback-probe", "done", self.clock(), detail)
        self.journal.save(j)
        self.ui.step("rollback-probe", "done", detail, self.clock() - t)

    def manual_rollback_commands(self, j: Journal, out: Outcome | None = None) -> list[str]:
        """What to type when the tool cannot finish: the exact previous bytes (JSON keeps every byte;
        `--output text` would add a newline), with the parameter's real type and tier."""
        c, r = self.cfg, self.cfg.region
        name, v = c.gateway.parameter_name, j.previous_version
        svc = f"--cluster {c.service.cluster_name}"
        put = (f"aws ssm put-parameter --region {r} --cli-input-json file://restore-v{v}.json --type "
               f"{j.parameter_type} --tier {j.parameter_tier} --overwrite")
        get = (f"aws ssm get-parameter --region {r} --name '{name}:{v}' --query \"{{Name: '{name}', "
               f"Value: Parameter.Value}}\" --output json > restore-v{v}.json")
        lines = [get, put]
        if j.restore is not None and j.restore.rule == FLAG_ONLY:
            lines = [f"# v{j.restore.foreign_version} was written by someone else: put back only the flag, keep "
                     f"their edits: in {name}, set {'.'.join(MODE_PATH)}: {j.previous_mode}"]
        return [*lines,
                f"aws ecs update-service --region {r} {svc} --service {c.service.service_name} --force-new-deployment",
                f"aws ecs wait services-stable --region {r} {svc} --services {c.service.service_name}",
                f"{self._cmd('rollback')}   # records it in the journal and releases the lock"]

    # ================================================================== recovery commands

    def _adopt(self, j: Journal, opts: Options, out: Outcome) -> bool:
        try:
            self.lock.adopt(run_id=j.run_id, operator=self.aws.caller_arn(), break_lock=opts.break_lock)
            return True
        except LockHeld as exc:
            out.end(ExitCode.FAILED, "locked", str(exc))
            return False

    def resume(self, opts: Options) -> Outcome:
        self._apply(opts)
        out = Outcome(env=self.cfg.environment)
        j = self.journal.load()
        if j is None or (j.state not in UNFINISHED and j.state != RunState.WATCH_CUT_SHORT):
            return out.end(ExitCode.DONE, "nothing_to_resume",
                           f"nothing to resume (last run {j.run_id}: {j.state})" if j else "no run on record")
        out.run_id, out.journal = j.run_id, j
        if not self._adopt(j, opts, out):
            return out
        self.ui.info(f"resuming {j.run_id} ({j.previous_mode} -> {j.target}), {j.state}, after "
                     f"{j.last_step.step if j.last_step else '?'}")
        if j.state in UNFINISHED_ROLLBACK:
            return self._rollback(j, out, j.rollback_reason or "resumed an unfinished rollback")
        if j.state == RunState.INTERRUPTED:
            j.transition(j.interrupted_in or RunState.FLIPPING)
            j.interrupted_in = None
        elif j.state == RunState.WATCH_CUT_SHORT:
            rest = j.watch_window - (j.watch_cut_short_after or 0)
            j.transition(RunState.WATCHING)
            j.watch_until = self.clock() + rest
            j.watch_cut_short_after = None
            j.record("watch", "resumed", self.clock(), f"{format_duration(rest)} of the window left")
        try:
            self.journal.save(j)
        except LockLost as lost:
            return out.end(ExitCode.FAILED, "taken_over", str(lost))
        return self._drive(j, out)

    def rollback(self, opts: Options) -> Outcome:
        out = Outcome(env=self.cfg.environment)
        j = self.journal.load()
        if j is None or j.previous_version is None or j.state == RunState.STOPPED:
            return out.end(ExitCode.DONE, "nothing_to_roll_back",
                           "no cutover on record that changed anything: nothing to roll back")
        out.run_id, out.journal = j.run_id, j
        _, mode = self.live()
        if j.state == RunState.ROLLED_BACK and mode == j.previous_mode:
            return out.end(ExitCode.DONE, "nothing_to_do",
                           f"{j.run_id} is already rolled back: {mode} is live")
        if not self._adopt(j, opts, out):
            return out
        return self._rollback(j, out, f"operator requested rollback of {j.run_id}")

    # ================================================================== status

    def status(self) -> Outcome:
        cfg = self.cfg
        out = Outcome(env=cfg.environment, code=ExitCode.DONE, state="status")
        param, mode = self.live()
        service = self.aws.describe_service(*self.svc)
        j = self.journal.load()
        lock = self.lock.read()
        out.journal, out.run_id = j, (j.run_id if j else None)
        nxt: list[str] = []
        notes = [f"{mode} (v{param.version})"]
        if j is not None:
            last = j.last_step.step if j.last_step else "?"
            notes.append(f"run {j.run_id} ({j.previous_mode} -> {j.target}) is {j.state} after {last}")
            if j.state in UNFINISHED_ROLLBACK:
                nxt = [self._cmd("rollback") + "    # finishes the rollback"]
            elif j.state in UNFINISHED:
                nxt = [self._cmd("resume"), self._cmd("rollback")]
            elif j.state == RunState.WATCH_CUT_SHORT:
                notes.append(f"watch cut short after {format_duration(j.watch_cut_short_after or 0)} of "
                             f"{format_duration(j.watch_window)}")
                nxt = [self._cmd("resume") + "      # watch the rest", self._cmd("rollback")]
            if j.restore is not None and j.restore.by != "tool":
                notes.append(f"restored by the {j.restore.by} at {iso(j.restore.at)} ({j.restore.rule})")
        if lock is not None and (j is None or lock.body.run_id != j.run_id):
            # The journal is written at the flip: a lock without one is a run that changed nothing
            # (still in preflight/gate/confirm, or killed there). It expires unless renewed.
            notes.append(f"lock held by run {lock.body.run_id} ({lock.body.operator}), which has not changed "
                         f"anything yet; expires {iso(lock.expires)}")
        sd_view = None
        if cfg.service.deployment.strategy != "rolling":
            try:
                briefs = self.aws.list_service_deployments(*self.svc)
            except Exception as exc:  # status is read-only and best effort: say what could not be read
                briefs = []
                notes.append(f"service deployments unreadable ({type(exc).__name__})")
            if briefs:
                sd = self.aws.describe_service_deployments([briefs[0]["serviceDeploymentArn"]])[0]
                prod, test = self._weights(sd)
                sd_view = {"arn": sd.get("serviceDeploymentArn"), "status": sd.get("status"),
                           "stage": sd.get("lifecycleStage"), "production_weight_new": prod, "test_weight_new": test,
                           "reason": sd.get("statusReason")}
                notes.append(f"service deployment {sd_view['status']} {sd_view['stage'] or ''}".rstrip()
                             + f": production {prod:g}% / test {test:g}% on the newest revision")
        out.status = StatusView(
            strategy=cfg.service.deployment.strategy, service_deployment=sd_view,
            mode=mode, parameter=cfg.gateway.parameter_name, version=param.version,
            deployments=[{"id": d["id"], "status": d.get("status"), "rolloutState": d.get("rolloutState"),
                          "running": d.get("runningCount"), "desired": d.get("desiredCount")}
                         for d in service.get("deployments", [])],
            running=service.get("runningCount", 0), desired=service.get("desiredCount", 0),
            lock=lock, run=j, next_commands=nxt)
        out.next_commands = nxt
        return out.end(ExitCode.DONE, "status", "; ".join(notes))


__all__ = ["FINISHED", "Cutover", "NeedsRollback", "Options", "Outcome", "StatusView", "Stop", "Terminated"]
