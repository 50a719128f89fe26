"""The cutover, step by step: lock -> preflight -> gate -> confirm -> flip -> redeploy -> probe ->
watch -> finish, or rollback. Pure orchestration: AWS, the clock, sleep, probes and the console
all arrive as arguments, so a 30-minute watch runs in milliseconds under test.

Every path ends in a known state that the Outcome says plainly:
  0 done / nothing to do   3 gate RED, nothing changed   4 rolled back
  5 rollback failed (manual commands printed)           1 anything else (incl. interrupted)
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cutover.aws import Aws
from cutover.journal import (
    ACTIVE_STATES,
    DONE,
    INTERRUPTED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    RUNNING,
    Journal,
    LockHeld,
    StateStore,
)
from cutover.mtls import (
    LEGITIMATE,
    GateCounts,
    GateVerdict,
    gate_filter_pattern,
    judge_gate,
    read_mode,
    with_mode,
    write_config_mode,
)
from cutover.probes import ProbeResult, ProbeSpec
from cutover.watch import WATCH_FILTER, LogCursor, WatchTally
from envconfig import MODE_PATH, EnvConfig, format_duration

OK, FAILED, GATE_RED, ROLLED_BACK_CODE, ROLLBACK_FAILED_CODE, USAGE = 0, 1, 3, 4, 5, 2
FORWARD_STEPS = ("flip", "redeploy", "probe", "watch")


class Ui(Protocol):
    interactive: bool

    def step(self, name: str, status: str, detail: str = "", seconds: float | None = None) -> None: ...
    def info(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def progress(self, text: str) -> None: ...
    def gate(self, verdict: GateVerdict) -> None: ...
    def probes(self, results: list[ProbeResult]) -> None: ...
    def ask(self, prompt: str, choices: tuple[str, ...]) -> str: ...


ProbeFn = Callable[..., list[ProbeResult]]


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Options:
    target: str = "strict"
    dry_run: bool = False
    yes: bool = False
    watch: float | None = None   # None: the config's window
    poll: float | None = None
    break_lock: bool = False


@dataclass
class Outcome:
    code: int
    state: str
    message: str
    env: str
    run_id: str | None = None
    journal: Journal | None = None
    gate: GateVerdict | None = None
    probes: list[ProbeResult] = field(default_factory=list)
    rollback_probes: list[ProbeResult] = field(default_factory=list)
    watch: dict[str, Any] | None = None
    manual: list[str] = field(default_factory=list)
    config_written: str | None = None
    report_path: str | None = None
    status: dict[str, Any] | None = None


class Stop(Exception):
    def __init__(self, code: int, state: str, message: str) -> None:
        super().__init__(message)
        self.code, self.state, self.message = code, state, message


class NeedsRollback(Exception):
    """Something after the flip went wrong: restore the previous parameter version."""


class TakenOver(Exception):
    """Another process adopted this run (`rollback` or `resume` elsewhere): stop acting on it."""


class Cutover:
    def __init__(self, cfg: EnvConfig, *, aws: Aws, clock: Callable[[], float], sleep: Callable[[float], None],
                 probe: ProbeFn, probe_spec: ProbeSpec, ui: Ui, run_id: Callable[[], str] | None = None) -> None:
        self.cfg, self.aws, self.clock, self.sleep = cfg, aws, clock, sleep
        self.probe_fn, self.probe_spec, self.ui = probe, probe_spec, ui
        self.store = StateStore(aws, lock_parameter=cfg.lock_parameter, journal_parameter=cfg.journal_parameter)
        self._new_run_id = run_id or self._default_run_id
        self.watch_window = cfg.cutover.watch
        self.poll = cfg.cutover.poll
        self.lock_token: str | None = None

    def _default_run_id(self) -> str:
        stamp = dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.cfg.environment}-{stamp}-{secrets.token_hex(2)}"

    # ================================================================== shared reads

    @property
    def svc(self) -> tuple[str, str]:
        return self.cfg.service.cluster_name, self.cfg.service.service_name

    def live(self) -> tuple[Any, str]:
        p = self.aws.get_parameter(self.cfg.gateway.parameter_name)
        return p, read_mode(p.value)

    def gate(self, service: dict | None = None) -> GateVerdict:
        """One pass over the log group for the whole lookback, every pattern in one pre-filter.
        `service`: the ECS description the caller already holds (preflight's), to avoid a re-read."""
        g = self.cfg.cutover.gate
        now = self.clock()
        counts = GateCounts(g)
        for ev in self.aws.log_events(self.cfg.observability.log_group_name, int((now - g.lookback) * 1000),
                                      int(now * 1000), gate_filter_pattern(g)):
            counts.add(ev["message"])
        service = service or self.aws.describe_service(*self.svc)
        return judge_gate(counts, self.cfg.cutover.future_callers,
                          alarms_in_alarm=self.aws.alarms_in_alarm(self.cfg.observability.guard_alarms),
                          deployments=service.get("deployments", []),
                          running=service.get("runningCount", 0), desired=service.get("desiredCount", 0))

    def run_probes(self, mode: str, run_id: str) -> list[ProbeResult]:
        tasks = self.aws.describe_service(*self.svc).get("runningCount", 0)
        return self.probe_fn(self.probe_spec, mode=mode, tasks=tasks, run_id=run_id)

    # ================================================================== mtls

    def run(self, opts: Options) -> Outcome:
        cfg = self.cfg
        if opts.watch is not None:
            self.watch_window = opts.watch
        if opts.poll is not None:
            self.poll = opts.poll
        run_id = self._new_run_id()
        out = Outcome(code=FAILED, state="", message="", env=cfg.environment, run_id=run_id)

        t0 = self.clock()
        operator = self.aws.caller_arn()
        if not opts.dry_run:
            try:
                self.lock_token = self.store.acquire(run_id=run_id, operator=operator, now=self.clock(),
                                                     ttl=cfg.cutover.lock_ttl, iso=iso, break_lock=opts.break_lock)
            except LockHeld as exc:
                return self._end(out, FAILED, "locked", str(exc))
            self.ui.step("lock", "done", f"{cfg.lock_parameter} held by run {run_id}", self.clock() - t0)

        journal: Journal | None = None
        try:
            # ---- preflight: read-only; any surprise stops with nothing changed
            t = self.clock()
            service = self.aws.describe_service(*self.svc)
            param, mode = self.live()
            deployments = service.get("deployments", [])
            self.ui.step("preflight", "done",
                         f"caller {operator}; {cfg.gateway.parameter_name} v{param.version} mode={mode}; "
                         f"service {service.get('runningCount')}/{service.get('desiredCount')} running, "
                         f"{len(deployments)} deployment(s)", self.clock() - t)
            if mode == opts.target:
                if not opts.dry_run and write_config_mode(cfg.source, mode):
                    out.config_written = cfg.source
                raise Stop(OK, "nothing_to_do", f"already {mode}: nothing to do, nothing changed in AWS")
            journal = Journal(run_id=run_id, env=cfg.environment, operator=operator, action="mtls",
                              target=opts.target, previous_mode=mode, parameter=cfg.gateway.parameter_name,
                              started=t0)
            journal.record("preflight", "done", self.clock(), f"v{param.version} {mode}")

            # ---- gate (strict only: --advisory is the deliberate way back)
            if opts.target == "strict":
                t = self.clock()
                verdict = self.gate(service)
                out.gate = verdict
                lookback = format_duration(cfg.cutover.gate.lookback)
                self.ui.step("gate", "GREEN" if verdict.green else "RED",
                             f"{verdict.counts.scanned} event(s) scanned over {lookback}", self.clock() - t)
                self.ui.gate(verdict)
                journal.record("gate", "done" if verdict.green else "red", self.clock())
                if not verdict.green:
                    raise Stop(GATE_RED, "gate_red", "gate RED: " + "; ".join(verdict.reasons))
            elif service.get("runningCount", 0) < 1:
                raise Stop(FAILED, "preflight_failed", "no running tasks: refusing to redeploy blind")

            # ---- confirm
            watch_note = f", watch {format_duration(self.watch_window)}" if opts.target == "strict" else ""
            plan = (f"set {'.'.join(MODE_PATH)}: {mode} -> {opts.target} in "
                    f"{cfg.gateway.parameter_name} (v{param.version}), force a new deployment of "
                    f"{cfg.service.service_name}, probe{watch_note}; roll back on a legitimate 403")
            self.ui.info(f"plan: {plan}")
            if opts.dry_run:
                raise Stop(OK, "dry_run", "dry run: stopped before any change")
            if not opts.yes:
                answer = self.ui.ask(f"type the environment name ({cfg.environment}) to proceed", ())
                if answer.strip() != cfg.environment:
                    raise Stop(FAILED, "not_confirmed", "not confirmed: nothing changed")
            journal.record("confirm", "done", self.clock(), "--yes" if opts.yes else "typed")
            journal.previous_version = param.version
        except Stop as stop:
            self._release(run_id, opts)
            out.journal = journal
            return self._end(out, stop.code, stop.state, stop.message)
        except BaseException:
            self._release(run_id, opts)
            raise
        try:
            self.store.save(journal)  # the run's first write: from here on the journal speaks for it
        except Exception:
            self._release(run_id, opts)  # nothing in production changed
            raise

        out.journal = journal
        return self._forward(journal, out, first="flip")

    def _release(self, run_id: str, opts: Options) -> None:
        if not opts.dry_run:
            self.store.release(run_id)

    # ================================================================== forward steps

    def _forward(self, j: Journal, out: Outcome, *, first: str) -> Outcome:
        steps: dict[str, Callable[[Journal, Outcome], str]] = {
            "flip": self._flip, "redeploy": self._redeploy, "probe": self._probe, "watch": self._watch}
        order = FORWARD_STEPS if j.target == "strict" else FORWARD_STEPS[:3]
        try:
            for name in order[order.index(first):]:
                t = self.clock()
                j.record(name, "started", t)
                try:
                    self.store.save(j)  # intent first: a crash inside the step is still on record
                    detail = steps[name](j, out)
                except (NeedsRollback, Stop, TakenOver):
                    raise
                except Exception as exc:  # an AWS error that survived the retries, a bug, ...
                    raise NeedsRollback(f"{name} failed: {type(exc).__name__}: {exc}") from exc
                j.record(name, "done", self.clock(), detail)
                self.store.save(j)
                self.ui.step(name, "done", detail, self.clock() - t)
        except NeedsRollback as why:
            self.ui.step(j.steps[-1]["step"], "FAILED", str(why))
            return self._rollback(j, out, str(why))
        except KeyboardInterrupt:
            return self._interrupted(j, out)
        except TakenOver as why:
            return self._end(out, FAILED, "taken_over", str(why))
        except Stop as stop:
            j.state = stop.state
            j.record(j.steps[-1]["step"], "failed", self.clock(), stop.message)
            self.store.save(j)
            self.store.release(j.run_id)
            return self._end(out, stop.code, stop.state, stop.message)

        return self._finish(j, out)

    def _flip(self, j: Journal, out: Outcome) -> str:
        name = self.cfg.gateway.parameter_name
        current, mode = self.live()
        if mode == j.target and j.previous_version is not None and current.version > j.previous_version:
            j.new_version = current.version  # resumed after a crash that happened after the write
            return f"v{current.version} already {mode} (found on resume)"
        if current.version != j.previous_version:
            raise NeedsRollback(f"{name} changed under us: v{j.previous_version} -> v{current.version}")
        tier = self.aws.prepare_write(name)
        new_version = self.aws.put_parameter(name, with_mode(current.value, j.target), type=current.type, tier=tier)
        j.new_version = new_version
        self.store.save(j)
        self.aws.label_parameter(name, j.previous_version, f"cutover-{j.run_id}-before")
        self.aws.label_parameter(name, new_version, f"cutover-{j.run_id}-after")
        return f"{j.previous_mode} -> {j.target}: v{j.previous_version} -> v{new_version}"

    def _redeploy(self, j: Journal, out: Outcome) -> str:
        if not j.deployment_id:  # on resume, wait for the deployment already started
            service = self.aws.force_new_deployment(*self.svc)
            primary = next(d for d in service["deployments"] if d.get("status") == "PRIMARY")
            j.deployment_id = primary["id"]
            self.store.save(j)
        return self._wait_for_deployment(j.deployment_id, label="redeploy")

    def _wait_for_deployment(self, deployment_id: str, *, label: str) -> str:
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
            running, desired = service.get("runningCount", 0), service.get("desiredCount", 0)
            if state == "COMPLETED" and len(deps) == 1 and running >= desired:
                return f"deployment {deployment_id} COMPLETED, {running}/{desired} tasks, old tasks drained"
            now = self.clock()
            if now >= deadline:
                raise NeedsRollback(f"deployment {deployment_id} not COMPLETED after "
                                    f"{format_duration(self.cfg.cutover.redeploy_timeout)} (state {state or '?'})")
            self.ui.progress(f"{label}: {state or '?'}, {mine.get('runningCount', 0)}/{mine.get('desiredCount', '?')} "
                             f"new tasks, {len(deps)} deployment(s); {format_duration(deadline - now)} left")
            self.sleep(min(self.poll, max(deadline - now, 0.01)))

    def _probe(self, j: Journal, out: Outcome) -> str:
        results = self.run_probes(j.target, j.run_id)
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
                raise Stop(FAILED, "probe_failed", msg + " (advisory is deployed; investigate the gateway)")
            raise NeedsRollback(msg)
        return f"{total} probes as expected for {j.target}"

    def _watch(self, j: Journal, out: Outcome) -> str:
        cfg = self.cfg
        now = self.clock()
        if j.watch_until is None:
            j.watch_until = now + self.watch_window
            self.store.save(j)
        flip_at = next((s["at"] for s in j.steps if s["step"] == "flip" and s["status"] == "started"), now)
        group = cfg.observability.log_group_name
        cursor = LogCursor(read=lambda lo, hi: self.aws.log_events(group, lo, hi, WATCH_FILTER),
                           start_ms=int(flip_at * 1000), overlap_ms=int(cfg.cutover.overlap * 1000))
        tally = WatchTally(cfg.access_log)
        out.watch = tally.summary()
        try:
            while True:
                now = self.clock()
                tally.polls += 1
                for ev in cursor.poll(int(now * 1000)):
                    if tally.add(ev) == LEGITIMATE:
                        out.watch = tally.summary()
                        first = tally.first_legitimate or {}
                        raise NeedsRollback(f"legitimate caller {first.get('caller')!r} got 403 on "
                                            f"{first.get('route')} at {iso(first.get('timestamp', 0) / 1000)}")
                if not self.store.holds(self.lock_token):
                    raise TakenOver(f"run {j.run_id} was taken over by another process (rollback or resume); "
                                    "this one stops here without touching production")
                alarms = self.aws.alarms_in_alarm(cfg.observability.guard_alarms)
                if alarms:
                    out.watch = tally.summary()
                    raise NeedsRollback(f"guard alarm(s) in ALARM during the watch: {', '.join(alarms)}")
                out.watch = tally.summary()
                remaining = j.watch_until - now
                if remaining <= 0:
                    break
                f = tally.forbidden
                self.ui.progress(f"watch: {format_duration(remaining)} left | mesh-write requests "
                                 f"{tally.mesh_writes} | 403s: legitimate {f['legitimate']}, probe {f['probe']}, "
                                 f"unauthenticated {f['unauthenticated']}")
                self.sleep(min(self.poll, remaining))
        except KeyboardInterrupt:
            if not self.ui.interactive:
                raise
            answer = self.ui.ask("interrupted: [k]eep strict and stop watching, [r]oll back, [c]ontinue?",
                                 ("k", "r", "c"))
            if answer == "r":
                raise NeedsRollback("operator chose to roll back during the watch") from None
            if answer == "c":
                return self._watch(j, out)
            out.watch = {**tally.summary(), "stopped_early": True}
        s = out.watch
        quiet = "" if s["mesh_write_requests"] else " (no mesh-write traffic: the window proved little)"
        if s["mesh_write_requests"] and not s["authenticated_requests"]:
            # A caller field that is never filled would make every 403 look unauthenticated.
            quiet = (f" (WARNING: no request carried '{cfg.access_log.caller_field}': check access_log.caller_field, "
                     "or the watch cannot recognise a legitimate caller)")
            self.ui.warn(quiet.strip(" ()"))
        return (f"{format_duration(self.watch_window)} window: {s['mesh_write_requests']} mesh-write request(s), "
                f"no legitimate 403{quiet}")

    # ================================================================== endings

    def _finish(self, j: Journal, out: Outcome) -> Outcome:
        if not self.store.holds(self.lock_token):
            return self._end(out, FAILED, "taken_over", f"run {j.run_id} was taken over by another process; "
                             "not finishing it here (see `status`)")
        j.state = DONE
        j.record("finish", "done", self.clock())
        self.store.save(j)
        self.store.release(j.run_id)
        self._write_config(j.target, out)
        return self._end(out, OK, DONE, f"{j.target} is live: v{j.new_version} deployed, probed and watched")

    def _write_config(self, mode: str, out: Outcome) -> None:
        """Make config/<env>.yaml agree with production. Production is already settled here, so a
        local file problem is a warning with the fix, never a failed cutover."""
        try:
            if self.cfg.source and write_config_mode(self.cfg.source, mode):
                out.config_written = self.cfg.source
        except (OSError, ValueError) as exc:
            self.ui.warn(f"could not write {self.cfg.source} ({exc}); set gateway.document.tls.mtls."
                         f"meshWritesEnforcement: {mode} there by hand so `cdk deploy` agrees with production")

    def _interrupted(self, j: Journal, out: Outcome) -> Outcome:
        if self.ui.interactive:
            answer = self.ui.ask("interrupted: [r]oll back now or [l]eave it as it is (resume later)?", ("r", "l"))
            if answer == "r":
                return self._rollback(j, out, "operator interrupted and chose rollback")
        j.state = INTERRUPTED
        j.record("interrupt", "done", self.clock(), f"after {j.steps[-1]['step']} {j.steps[-1]['status']}")
        self.store.save(j)
        env = self.cfg.environment
        out.manual = [f"python -m cutover status --env {env}", f"python -m cutover resume --env {env}",
                      f"python -m cutover rollback --env {env}"]
        return self._end(out, FAILED, INTERRUPTED,
                         f"interrupted during {j.steps[-1]['step']}; the lock stays held by {j.run_id}: "
                         "resume or roll back (commands below)")

    def _rollback(self, j: Journal, out: Outcome, reason: str) -> Outcome:
        name = self.cfg.gateway.parameter_name
        self.ui.warn(f"ROLLING BACK: {reason}")
        j.record("rollback", "started", self.clock(), reason)
        try:
            self.store.save(j)
            if j.previous_version is None:
                raise RuntimeError("the journal has no previous version to restore")
            previous = self.aws.get_parameter(name, j.previous_version)
            current = self.aws.get_parameter(name)
            restored = "unchanged"
            if current.value != previous.value:
                # Restore the exact previous document, never a hard-coded mode.
                tier = self.aws.prepare_write(name)
                v = self.aws.put_parameter(name, previous.value, type=previous.type, tier=tier)
                self.aws.label_parameter(name, v, f"cutover-{j.run_id}-rollback")
                restored = f"v{current.version} -> v{v} (= v{j.previous_version})"
            j.record("restore", "done", self.clock(), restored)
            self.store.save(j)
            self.ui.step("restore", "done", restored)
            if j.deployment_id or j.last("redeploy"):
                # Tasks that read the new value are running (or starting): replace them.
                service = self.aws.force_new_deployment(*self.svc)
                dep = next(d for d in service["deployments"] if d.get("status") == "PRIMARY")["id"]
                j.record("rollback-redeploy", "started", self.clock(), dep)
                self.store.save(j)
                detail = self._wait_for_deployment(dep, label="rollback redeploy")
                j.record("rollback-redeploy", "done", self.clock(), detail)
                self.ui.step("rollback-redeploy", "done", detail)
                mode = read_mode(previous.value)
                results = self.run_probes(mode, j.run_id)
                out.rollback_probes = results
                bad = [r for r in results if not r.ok]
                if bad:
                    raise RuntimeError(f"after rollback, probes still disagree with {mode}: "
                                       f"{bad[0].kind} {bad[0].route} got {sorted(set(bad[0].statuses))}")
                j.record("rollback-probe", "done", self.clock(), f"{mode} behaviour confirmed")
                self.ui.step("rollback-probe", "done", f"{sum(len(r.statuses) for r in results)} probes as "
                             f"expected for {mode}")
            j.state = ROLLED_BACK
            j.record("rollback", "done", self.clock())
            self.store.save(j)
            self.store.release(j.run_id)
            self._write_config(j.previous_mode, out)
            return self._end(out, ROLLED_BACK_CODE, ROLLED_BACK,
                             f"rolled back to v{j.previous_version} ({j.previous_mode}): {reason}")
        except Exception as exc:
            j.state = ROLLBACK_FAILED
            j.record("rollback", "failed", self.clock(), f"{type(exc).__name__}: {exc}")
            try:
                self.store.save(j)
            except Exception as save_exc:  # the journal is best effort here; the message is not
                self.ui.warn(f"could not record the failure in the journal: {save_exc}")
            out.manual = self.manual_rollback_commands(j)
            return self._end(out, ROLLBACK_FAILED_CODE, ROLLBACK_FAILED,
                             f"ROLLBACK FAILED ({type(exc).__name__}: {exc}); production may still run "
                             f"{j.target}. Restore by hand NOW (commands below); the lock stays held.")

    def manual_rollback_commands(self, j: Journal) -> list[str]:
        c, r = self.cfg, self.cfg.region
        name, v = c.gateway.parameter_name, j.previous_version
        svc = f"--cluster {c.service.cluster_name}"
        return [
            f"aws ssm get-parameter --region {r} --name '{name}:{v}' --query Parameter.Value --output text "
            f"> gateway-v{v}.yaml",
            f"aws ssm put-parameter --region {r} --name '{name}' --type String --overwrite "
            f"--value file://gateway-v{v}.yaml",
            f"aws ecs update-service --region {r} {svc} --service {c.service.service_name} --force-new-deployment",
            f"aws ecs wait services-stable --region {r} {svc} --services {c.service.service_name}",
            f"python -m cutover status --env {c.environment}   # then: python -m cutover rollback --env "
            f"{c.environment} to record it",
        ]

    def _end(self, out: Outcome, code: int, state: str, message: str) -> Outcome:
        out.code, out.state, out.message = code, state, message
        return out

    # ================================================================== recovery commands

    def _adopt(self, j: Journal, opts: Options) -> None:
        operator = self.aws.caller_arn()
        self.lock_token = self.store.acquire(run_id=j.run_id, operator=operator, now=self.clock(),
                                             ttl=self.cfg.cutover.lock_ttl, iso=iso, break_lock=opts.break_lock,
                                             take_over=j.run_id)

    def resume(self, opts: Options) -> Outcome:
        out = Outcome(code=FAILED, state="", message="", env=self.cfg.environment)
        if opts.watch is not None:
            self.watch_window = opts.watch
        if opts.poll is not None:
            self.poll = opts.poll
        j = self.store.load()
        if j is None or j.state not in ACTIVE_STATES:
            return self._end(out, OK, "nothing_to_resume",
                             f"no interrupted run (last: {j.run_id} {j.state})" if j else "no run on record")
        out.run_id, out.journal = j.run_id, j
        try:
            self._adopt(j, opts)
        except LockHeld as exc:
            return self._end(out, FAILED, "locked", str(exc))
        self.ui.info(f"resuming {j.run_id} ({j.target}) after {j.last_step}")
        if j.state == ROLLBACK_FAILED:
            return self._rollback(j, out, "resumed a failed rollback")
        j.state = RUNNING
        first = next((s for s in FORWARD_STEPS if j.last(s) != "done"), None)
        if first is None or (j.target == "advisory" and first == "watch"):
            return self._finish(j, out)
        return self._forward(j, out, first=first)

    def rollback(self, opts: Options) -> Outcome:
        out = Outcome(code=FAILED, state="", message="", env=self.cfg.environment)
        j = self.store.load()
        if j is None or j.previous_version is None:
            return self._end(out, FAILED, "nothing_to_roll_back", "no cutover on record: nothing to roll back")
        out.run_id, out.journal = j.run_id, j
        current, _ = self.live()
        previous = self.aws.get_parameter(self.cfg.gateway.parameter_name, j.previous_version)
        if j.state == ROLLED_BACK and current.value == previous.value:
            return self._end(out, OK, "nothing_to_do", f"{j.run_id} is already rolled back to v{j.previous_version}")
        try:
            self._adopt(j, opts)
        except LockHeld as exc:
            return self._end(out, FAILED, "locked", str(exc))
        if j.deployment_id is None and current.value != previous.value:
            j.deployment_id = "unknown"  # the flip may have reached tasks via a deployment we never saw
        return self._rollback(j, out, f"operator requested rollback of {j.run_id}")

    def status(self) -> Outcome:
        cfg = self.cfg
        out = Outcome(code=OK, state="status", message="", env=cfg.environment)
        param, mode = self.live()
        service = self.aws.describe_service(*self.svc)
        j = self.store.load()
        lock = self.store.read_lock()
        file_mode = read_mode(Path(cfg.source).read_text(encoding="utf-8"), ("gateway", "document", *MODE_PATH))
        out.journal, out.run_id = j, (j.run_id if j else None)
        out.status = {
            "mode": mode, "parameter": cfg.gateway.parameter_name, "version": param.version,
            "config_file_mode": file_mode, "drift": file_mode != mode,
            "deployments": [{"id": d["id"], "status": d.get("status"), "rolloutState": d.get("rolloutState"),
                             "running": d.get("runningCount"), "desired": d.get("desiredCount")}
                            for d in service.get("deployments", [])],
            "running": service.get("runningCount"), "desired": service.get("desiredCount"),
            "lock": lock, "lock_expired": bool(lock and float(lock.get("expires", 0)) <= self.clock()),
            "run": None if j is None else {"run_id": j.run_id, "state": j.state, "target": j.target,
                                           "previous_version": j.previous_version, "new_version": j.new_version,
                                           "last_step": j.last_step, "operator": j.operator},
        }
        out.message = f"{mode} (v{param.version})" + (f"; DRIFT: {cfg.source} says {file_mode}" if file_mode != mode else "")
        if j and j.state in ACTIVE_STATES:
            out.message += f"; run {j.run_id} is {j.state} after {j.last_step['step'] if j.last_step else '?'}"
        if lock and (j is None or lock.get("run_id") != j.run_id):
            # The journal is written at the flip: a lock without one is a run that changed nothing
            # (still in preflight/gate/confirm, or killed there). It expires at its expiry.
            out.message += (f"; lock held by run {lock.get('run_id')} ({lock.get('operator')}), which has not changed "
                            f"anything yet; expires {lock.get('expires_iso')}")
        return out
