"""The rollback steps: stop the deployment (canary), the restore rule (shared with the
restorer Lambda), a redeploy when tasks may have read the new value, probes; and what to do by
hand when it cannot finish."""

from __future__ import annotations

from cutover.exitcodes import ExitCode
from cutover.lockstore import LockLost
from cutover.outcome import (
    NeedsRollback,
    Outcome,
)
from cutover.parts import Parts
from cutover_core.flag import MODE_PATH
from cutover_core.journal import (
    UNFINISHED,
    Journal,
    RestoreRecord,
    RunState,
)
from cutover_core.restore import EXACT, FLAG_ONLY, NOTHING, plan_restore


class ForeignWrite(Exception):
    """The parameter changed under the rollback: it did not end where it says."""

class RollbackSteps(Parts):

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
                try:
                    blue_serving = self._stop_service_deployment(j, out)
                except (LockLost, KeyboardInterrupt):
                    raise
                except Exception as exc:  # the restore must happen anyway: go on the redeploy way
                    j.record("stop-deployment", "failed", self.clock(), f"{type(exc).__name__}: {exc}")
                    self.ui.warn(f"could not stop the service deployment ({type(exc).__name__}: {exc}); restoring "
                                 "the parameter and redeploying instead")
            sub = "restore"
            self._restore(j)
            if self._needs_redeploy(j) and not blue_serving:
                sub = "rollback-redeploy"
                self._rollback_redeploy(j, out)
            if self._needs_redeploy(j):
                sub = "rollback-probe"
                self._rollback_probe(j, out)
            sub = "final-check"
            live, mode_now = self.live()
            if mode_now != j.previous_mode:  # someone wrote it again while we rolled back
                raise ForeignWrite(f"v{live.version} of the gateway parameter, written by someone else during the "
                                   f"rollback, is {mode_now}: the next task start brings {mode_now} live")
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
            if not self.lock.holds():  # the restorer (or an operator) took the run over meanwhile
                return self._taken_over(out, LockLost(f"run {j.run_id} was taken over during the rollback"))
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
            for _ in range(3):
                if written == current.version + 1:
                    break
                # Someone wrote between our read and our write: ours was planned from what they replaced
                # and overwrote their edit. Plan again from their version and write the result.
                current = self.aws.get_parameter(name, written - 1)
                plan = plan_restore(current_value=current.value, current_version=current.version,
                                    previous_value=previous.value, previous_version=j.previous_version,
                                    previous_mode=j.previous_mode, run_target=j.target, run_version=j.new_version)
                written = self.aws.put_parameter(name, plan.value if plan.value is not None else current.value,
                                                 type=current.type, tier=tier)
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
        holder = self.lock.read()
        if holder is not None and holder.body.run_id != j.run_id:  # a new run holds production: not our proof
            return out.end(ExitCode.ROLLED_BACK, str(RunState.ROLLED_BACK),
                           f"rolled back to {j.previous_mode} by the restorer (server side): {j.rollback_reason}; "
                           "not verified here: another run holds the lock now")
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
        detail = f"the restorer's rollback verified: {len(results)} probes as expected for {j.previous_mode}"
        self.ui.step("rollback-probe", "done", detail)
        self._record_verified(j, detail)
        return out.end(ExitCode.ROLLED_BACK, str(RunState.ROLLED_BACK),
                       f"rolled back to {j.previous_mode} by the restorer (server side), verified by probes: "
                       f"{j.rollback_reason}")

    def _record_verified(self, j: Journal, detail: str) -> None:
        """Put the verification in the journal, so `status` elsewhere need not call it unverified.
        Under the lock, briefly, and only into the same story: if someone holds the lock, or the
        journal has moved on (a new run), it is theirs and left alone."""
        from cutover.lockstore import LockHeld

        try:
            self.lock.acquire(run_id=j.run_id, operator=self.aws.caller_arn())
        except LockHeld:
            return
        try:
            now = self.journal.load()
            if now is None or now.run_id != j.run_id or now.state != RunState.ROLLED_BACK or now.steps != j.steps:
                return
            now.record("rollback-probe", "done", self.clock(), detail)
            self._save_quietly(now)
        finally:
            self.lock.release()

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
