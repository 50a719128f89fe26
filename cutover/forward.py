"""The forward steps, each a small unit the state machine drives: flip, redeploy, probe and
proof, watch, finish; and what an interruption does to them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from cutover.exitcodes import ExitCode
from cutover.lockstore import LockLost
from cutover.mtls import spliced
from cutover.outcome import (
    INTERRUPT_PROMPT_TIMEOUT,
    STEP_OF,
    NeedsRollback,
    Outcome,
    Stop,
    Terminated,
)
from cutover.parts import Parts
from cutover.probes import NO_CERT, ProbeResult
from cutover.watch import WATCH_FILTER, LogCursor, Watcher
from cutover_core.flag import FlagError, with_mode
from cutover_core.journal import (
    Journal,
    RunState,
)
from envconfig import format_duration


class ForwardSteps(Parts):

    def _flip(self, j: Journal, out: Outcome) -> None:
        t = self._begin(j, "flip")
        name = self.cfg.gateway.parameter_name
        current = self.aws.get_parameter(name)
        assert j.previous_version is not None
        if current.version == j.previous_version:
            if j.flipped_at is None:
                j.flipped_at = t
                self.journal.save(j)  # the watch reads from here, even if we die right after the write
            try:
                document = spliced(current.value, j.target)
            except FlagError as exc:  # before any write: nothing changed
                raise Stop(ExitCode.FAILED, "cannot_flip", f"{name} v{current.version}: {exc}; nothing changed. "
                           "Set the flag by hand, or rewrite the document in plain block-style YAML") from None
            tier = self.aws.prepare_write(name)
            j.parameter_tier = tier
            j.new_version = self.aws.put_parameter(name, document, type=current.type, tier=tier)
            self.journal.save(j)
            if j.new_version != current.version + 1:
                # Someone wrote between our read and our write (a `cdk deploy` in the gap): our write
                # replaced theirs. Put theirs back, byte for byte; this run then changed nothing.
                theirs = self.aws.get_parameter(name, j.new_version - 1)
                back = self.aws.put_parameter(name, theirs.value, type=theirs.type, tier=tier)
                ours, j.new_version = j.new_version, None
                self.journal.save(j)
                raise Stop(ExitCode.FAILED, "changed_under_us",
                           f"{name} changed during the flip: v{current.version} read, v{theirs.version} written by "
                           f"someone else before this run's write v{ours}; v{theirs.version} is back as v{back}, "
                           "byte for byte: nothing changed by this run. Look at it, then start again",
                           [self._cmd("status")])
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
                           start_ms=int(((j.flipped_at or self.clock()) + self.aws_offset) * 1000),
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
            # A caller hurt meanwhile, or ECS rolling back on its own (the test listener then reaches the old
            # tasks), explains wrong probes better than the probes do: look first.
            self._tick(j, out, watching=True, force=True)
            if j.strategy != "rolling":
                self._not_stopped(self._service_deployment(j))
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
        try:
            while (answer := pending.answer()) is None:
                if self.clock() >= deadline:
                    self.ui.info(f"no answer within {format_duration(INTERRUPT_PROMPT_TIMEOUT)}: continuing")
                    return "continue"
                self.sleep(1)
                self._tick(j, out, watching=j.flipped_at is not None)
        except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) while asking: leave, recorded
            return "leave"
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
        if j.strategy != "rolling" and j.service_deployment is not None:
            try:
                sd = self._service_deployment(j)
                prod, _ = self._weights(sd)
                if sd.get("status") == "IN_PROGRESS":
                    note += (f"; the {j.strategy} deployment still runs ({sd.get('lifecycleStage')}, {prod:g}% of "
                             "production on strict tasks): if ECS rolls it back, the restorer puts "
                             f"{j.previous_mode} back")
            except Exception as exc:  # the note is informative; keeping strict is the operator's call
                note += f"; the deployment's state could not be read ({type(exc).__name__})"
        j.record("watch", "cut-short", self.clock(), note)
        j.transition(RunState.WATCH_CUT_SHORT)
        self._summary(j, out)
        return self._finish(j, out, note=note)

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
