"""Before anything changes: preflight, the gate (with staged promotion), the plan and the
confirmation. Each surprise is a Stop with nothing changed."""

from __future__ import annotations

from cutover.exitcodes import ExitCode
from cutover.mtls import GateCounts, GateVerdict, gate_filter_pattern, judge_gate
from cutover.outcome import (
    CONFIRM_TIMEOUT,
    Options,
    Outcome,
    Stop,
)
from cutover.parts import Parts
from cutover_core.flag import MODE_PATH
from cutover_core.journal import (
    UNFINISHED_ROLLBACK,
    Journal,
    RunState,
)
from envconfig import format_duration


class Planner(Parts):

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
        now = self.aws_now()
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
