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

from cutover.exitcodes import ExitCode
from cutover.forward import ForwardSteps
from cutover.lockstore import LockHeld, LockLost, iso
from cutover.outcome import (
    STEP_OF,
    NeedsRollback,
    Options,
    Outcome,
    StatusView,
    Stop,
    Terminated,
)
from cutover.planner import Planner
from cutover.rollback import RollbackSteps
from cutover.shifting import ServiceDeployments
from cutover_core.journal import (
    FINISHED,
    FORWARD,
    UNFINISHED,
    UNFINISHED_ROLLBACK,
    Journal,
    RunState,
)
from envconfig import format_duration


class Cutover(Planner, ForwardSteps, ServiceDeployments, RollbackSteps):
    """The state machine and its entry points (`mtls` is `run`)."""

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
                return self._fail_forward(j, out, str(why))
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
                return self._fail_forward(j, out, why)
        return self._finish(j, out)

    def _fail_forward(self, j: Journal, out: Outcome, why: str) -> Outcome:
        """A forward failure rolls back, except on the way back to advisory: putting strict back would
        re-break the callers the operator is unbreaking. Then the run stops, advisory written, and
        says how to finish the way back by hand."""
        if j.target != "advisory":
            return self._rollback(j, out, why)
        j.record(STEP_OF.get(j.state, str(j.state)), "failed", self.clock(), why)
        j.transition(RunState.STOPPED)
        self._save_quietly(j)
        self.lock.release()
        c = self.cfg
        out.next_commands = [
            f"aws ecs update-service --region {c.region} --cluster {c.service.cluster_name} --service "
            f"{c.service.service_name} --force-new-deployment    # tasks that read advisory",
            self._cmd("probe") + "    # then check that no-cert requests are served again"]
        return out.end(ExitCode.FAILED, "advisory_incomplete",
                       f"advisory is written (v{j.new_version}) but {why}; NOT rolled back to strict (that would "
                       "re-break the callers); tasks may still run strict: redeploy and probe (commands below)")

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
        if j.target == "advisory":
            # Undoing the way back would make strict live with no gate, sentinel or watch (the forward
            # path and the restorer refuse it too): going strict again is a gated run; an unfinished
            # way back is finished by resume.
            unfinished = j.state in UNFINISHED
            out.next_commands = [self._cmd("resume") if unfinished else self._cmd("mtls --strict")]
            return out.end(ExitCode.FAILED, "refused",
                           f"{j.run_id} is the way back to advisory ({j.previous_mode} -> advisory); rolling it back "
                           "would put strict live with no gate, probes' proof or watch: "
                           + ("finish the way back with resume (command below)" if unfinished else
                              "run the gated cutover instead (command below)"))
        _, mode = self.live()
        reason = f"operator requested rollback of {j.run_id}"
        if j.state == RunState.ROLLED_BACK and mode == j.previous_mode:
            # The parameter alone proves little (a restorer's redeploy may have failed): nothing to
            # do only when the service is steady and the probes see the previous mode.
            deps = self.aws.describe_service(*self.svc).get("deployments", [])
            steady = len(deps) == 1 and deps[0].get("rolloutState") == "COMPLETED"
            results = self.run_probes(j.previous_mode, j.run_id)
            bad = [r for r in results if not r.ok]
            if steady and not bad:
                out.rollback_probes = results
                return out.end(ExitCode.DONE, "nothing_to_do", f"{j.run_id} is already rolled back: {mode} is live, "
                               "the service is steady and the probes agree")
            reason = (f"{j.run_id} was rolled back but production does not agree: "
                      + ("the service is not steady" if not steady else
                         f"{bad[0].kind} {bad[0].route} got {sorted(set(bad[0].statuses))}"))
        if not self._adopt(j, opts, out):
            return out
        return self._rollback(j, out, reason)

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
        primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), None)
        if primary is not None and primary.get("rolloutState") == "FAILED":
            notes.append(f"the service's last deployment FAILED: its tasks may not run {mode}; check with `probe`")
        if j is not None:
            last = j.last_step.step if j.last_step else "?"
            notes.append(f"run {j.run_id} ({j.previous_mode} -> {j.target}) is {j.state} after {last}")
            if j.state in UNFINISHED_ROLLBACK:
                nxt = [self._cmd("rollback") + "    # finishes the rollback"]
            elif j.state in UNFINISHED:
                nxt = [self._cmd("resume"), self._cmd("rollback")]
            if j.state in UNFINISHED and j.state != RunState.INTERRUPTED and lock is not None \
                    and lock.body.run_id == j.run_id:
                # A live run renews its lock every quarter TTL; much longer silence means no process.
                quiet = lock.aws_now - lock.modified
                if quiet > lock.body.ttl / 4 + 2 * self.poll:
                    notes.append(f"its lock was last renewed {format_duration(quiet)} ago (a live run renews "
                                 f"every {format_duration(lock.body.ttl / 4)}): the process is probably gone")
            if j.restore is not None and j.restore.by == "restorer" and j.state == RunState.ROLLED_BACK \
                    and not _verified_after(j, j.restore.at):
                notes.append("the restorer's rollback is not verified by probes: run `probe` (or `rollback`, "
                             "which verifies before saying nothing to do)")
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


def _verified_after(j: Journal, at: float) -> bool:
    """A rollback-probe step that passed after the restore: the tool verified the restorer's rollback."""
    return any(s.step == "rollback-probe" and s.status == "done" and s.at >= at for s in j.steps)
