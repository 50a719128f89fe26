"""What a run leaves behind: the console lines, a markdown report in the ship log's table style,
and a machine-readable JSON result. Rendering only: every fact comes from the Outcome."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from cutover.engine import Outcome
from cutover.exitcodes import ExitCode
from cutover.lockstore import iso
from cutover.mtls import GateVerdict
from envconfig import format_duration


class _Answer:
    """A question's answer, read without blocking the run: on a terminal a thread waits for the
    line while the engine goes on polling; from a pipe or a file the line is read at once. End of
    input is no answer at all (the engine's timeout decides)."""

    def __init__(self, stream: TextIO, choices: tuple[str, ...], *, background: bool) -> None:
        self.stream, self.choices = stream, choices
        self._value: str | None = None
        if background:
            threading.Thread(target=self._read, name="cutover-prompt", daemon=True).start()
        else:
            self._read()

    def _read(self) -> None:
        line = self.stream.readline()
        if not line:
            return
        value = line.strip()
        if self.choices and value not in self.choices:
            value = self.choices[-1]  # the last choice is the safe default (continue)
        self._value = value

    def answer(self) -> str | None:
        return self._value


class ConsoleUi:
    """Human output. With --json it goes to stderr so stdout stays one JSON document."""

    def __init__(self, stream: TextIO = sys.stdout, *, interactive: bool = False,
                 answers: TextIO = sys.stdin) -> None:
        self.stream, self.interactive, self.answers = stream, interactive, answers
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._progress_open = False

    def _line(self, text: str) -> None:
        if self._progress_open:
            self.stream.write("\n")
            self._progress_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, name: str, status: str, detail: str = "", seconds: float | None = None) -> None:
        mark = {"done": "ok", "GREEN": "ok"}.get(status, status)
        took = f"{seconds:6.1f}s" if seconds is not None else " " * 7
        self._line(f"[{mark:>6}] {name:<18} {took}  {detail}")

    def info(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._line(f"         {line}" if line else "")

    def warn(self, text: str) -> None:
        self._line(f"[  WARN] {text}")

    def progress(self, text: str) -> None:
        if self._tty:
            self.stream.write("\r\x1b[2K         " + text)
            self.stream.flush()
            self._progress_open = True
        else:
            self._line(f"         {text}")

    def gate(self, verdict: GateVerdict) -> None:
        self._line("")
        for line in gate_text(verdict).splitlines():
            self._line(f"         {line}" if line else "")
        self._line("")

    def probes(self, results: list) -> None:
        self.info(table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(results)))

    def ask(self, prompt: str, choices: tuple[str, ...]) -> _Answer:
        self._line(f"         {prompt} ")
        return _Answer(self.answers, choices, background=hasattr(self.answers, "isatty") and self.answers.isatty())


# ---------------------------------------------------------------- tables


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def gate_table(verdict: GateVerdict) -> str:
    c = verdict.counts
    rows = [[f'"{p}"' + (f" (excl. {', '.join(c.gate.broad_excludes)})" if p == c.gate.broad_pattern else ""), n]
            for p, n in c.patterns.items()]
    rows += [[r, n] for r, n in c.routes.items()]
    rows.append(["cutover probes and sentinel (excluded)", c.own])
    return table(["Pattern", f"Past {format_duration(c.gate.lookback)} matches"], rows)


def gate_text(verdict: GateVerdict) -> str:
    lines = [gate_table(verdict), "", table(["Future caller", "State"], [list(x) for x in verdict.callers]), "",
             f"Gate: {'GREEN' if verdict.green else 'RED'} ({verdict.counts.scanned} events scanned, "
             f"{verdict.counts.excluded} excluded as timing lines)"]
    lines += [f"  - {r}" for r in verdict.reasons]
    return "\n".join(lines)


def probe_rows(results: list) -> list[list[Any]]:
    return [[r.route, r.kind, r.expect, ", ".join(f"{s}x{r.statuses.count(s)}" for s in sorted(set(r.statuses))),
             "ok" if r.ok else "**WRONG**"] for r in results]


def step_rows(outcome: Outcome) -> list[list[Any]]:
    """One row per step, in the order they ended (a rollback after the watch reads after it); a
    step that started and never ended is shown as such where it started."""
    j = outcome.journal
    if j is None:
        return []
    rows: list[list[Any]] = []
    open_rows: dict[str, list[Any]] = {}
    for s in j.steps:
        if s.status in ("started", "resumed"):
            row = [s.step, "started (not finished)", iso(s.at), "", s.detail]
            open_rows[s.step] = row
            rows.append(row)
            continue
        row = open_rows.pop(s.step, None)
        if row is not None:
            rows.remove(row)
            took = f"{s.at - float(_epoch(row[2])):.1f}s"
        else:
            took = ""
        rows.append([s.step, s.status, iso(s.at), took, s.detail])
    return rows


def _epoch(text: str) -> float:
    import datetime as dt
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def title(outcome: Outcome, *, sandbox: bool = False) -> str:
    where = f"{outcome.env} (sandbox rehearsal)" if sandbox else outcome.env
    return f"# mTLS cutover — {where} — {outcome.run_id or ''}".rstrip(" —")


def markdown(outcome: Outcome, *, sandbox: bool = False) -> str:
    j = outcome.journal
    code = ExitCode(outcome.code)
    out = [title(outcome, sandbox=sandbox), "",
           f"**Outcome:** {outcome.state} (exit {int(code)}: {code.meaning})  ",
           f"**Summary:** {outcome.message}  "]
    if j:
        versions = f"v{j.previous_version}" + (f" -> v{j.new_version}" if j.new_version is not None else
                                                " (not written)")
        out += [f"**Operator:** {j.operator}  ", f"**Change:** `tls.mtls.meshWritesEnforcement` "
                f"{j.previous_mode} -> {j.target} ({j.parameter} {versions})  ",
                f"**Started:** {iso(j.started)}  "]
        if j.first_strict_task is not None:
            out.append(f"**First strict task took traffic:** {iso(j.first_strict_task)}  ")
        if j.watch_started is not None:
            out.append(f"**Watch window began:** {iso(j.watch_started)} (the watch itself ran from the flip, "
                       f"{iso(j.flipped_at or j.started)})  ")
        if j.skip_staging:
            out.append(f"**Staged promotion skipped:** {j.skip_staging}  ")
        if j.target == "strict" and j.sentinel:
            out.append("**Watch:** " + ("verified by the sentinel (a hurt caller's 403 is seen, on every task)"
                                        if j.sentinel == "verified" else "UNVERIFIED (run without a sentinel)") + "  ")
        if j.restore is not None:
            out.append(f"**Restore:** {j.restore.rule} by the {j.restore.by}"
                       + (f" (v{j.restore.foreign_version} was someone else's: only the flag went back)"
                          if j.restore.foreign_version else "") + "  ")
    elif outcome.plan:
        out += [f"**Plan:** {outcome.plan}  "]
    if outcome.gate:
        out += ["", "## Pre-cutover gate", "", gate_text(outcome.gate)]
    rows = step_rows(outcome)
    if rows:
        out += ["", "## Steps", "", table(["Step", "Status", "At (UTC)", "Took", "Detail"], rows)]
    if outcome.probes:
        out += ["", "## Probes", "", table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(outcome.probes))]
    if outcome.watch:
        w = outcome.watch
        f = w.forbidden
        verdict = ("cut short" if w.cut_short else "ended by a rollback" if outcome.code != ExitCode.DONE
                   else "completed")
        out += ["", "## Watch", "", table(["Measure", "Value"], [
            ["window", f"{format_duration(w.window)} ({verdict}; {format_duration(w.watched)} of it watched)"],
            ["polls", w.polls], ["log events read", w.events_read],
            ["mesh-write requests from callers", w.mesh_write_requests],
            ["… of which authenticated (caller field set)", w.authenticated_requests],
            ["the tool's own requests (probes, sentinel)", w.own_requests],
            ["403 legitimate caller", f.get("legitimate", 0)], ["403 own probe", f.get("probe", 0)],
            ["403 own sentinel", f.get("sentinel", 0)], ["403 unauthenticated", f.get("unauthenticated", 0)]])]
        if not w.mesh_write_requests:
            out += ["", "_No mesh-write traffic from callers during the window: it proved little. "
                        "Zero traffic is not zero callers._"]
        if w.first_legitimate:
            out += ["", f"First legitimate 403: `{w.first_legitimate.message}`"]
    if outcome.rollback_probes:
        out += ["", "## Probes after rollback", "",
                table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(outcome.rollback_probes))]
    if outcome.warnings:
        out += ["", "## Warnings", "", *[f"- {w}" for w in outcome.warnings]]
    if outcome.manual:
        out += ["", "## Manual action", "", "```", *outcome.manual, "```"]
    if outcome.next_commands:
        out += ["", "## Next", "", "```", *outcome.next_commands, "```"]
    return "\n".join(out) + "\n"


def to_json(outcome: Outcome, *, status_extra: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {
        "exit_code": int(outcome.code), "outcome": outcome.state, "message": outcome.message, "env": outcome.env,
        "run_id": outcome.run_id, "manual": outcome.manual, "next": outcome.next_commands,
        "config_mode": outcome.config_mode, "warnings": outcome.warnings, "plan": outcome.plan,
        "watch": asdict(outcome.watch) if outcome.watch else None,
        "journal": outcome.journal.to_dict() if outcome.journal else None,
        "probes": [{"route": r.route, "kind": r.kind, "expect": r.expect, "statuses": list(r.statuses), "ok": r.ok}
                   for r in outcome.probes],
        "rollback_probes": [{"route": r.route, "kind": r.kind, "expect": r.expect, "statuses": list(r.statuses),
                             "ok": r.ok} for r in outcome.rollback_probes],
    }
    if outcome.status:
        s = outcome.status
        lock = s.lock
        data["status"] = {
            "mode": s.mode, "parameter": s.parameter, "version": s.version, "deployments": s.deployments,
            "running": s.running, "desired": s.desired, "next": s.next_commands, "strategy": s.strategy,
            "service_deployment": s.service_deployment,
            "restored_by": s.run.restore.by if s.run is not None and s.run.restore is not None else None,
            "lock": None if lock is None else {"run_id": lock.body.run_id, "operator": lock.body.operator,
                                               "expires": iso(lock.expires), "expired": lock.expired},
            "run": None if s.run is None else {"run_id": s.run.run_id, "state": s.run.state,
                                               "target": s.run.target, "last_step": asdict(s.run.last_step)
                                               if s.run.last_step else None},
            **(status_extra or {}),
        }
    if outcome.gate:
        g = outcome.gate
        data["gate"] = {"green": g.green, "reasons": list(g.reasons), "patterns": dict(g.counts.patterns),
                        "routes": dict(g.counts.routes), "scanned": g.counts.scanned,
                        "excluded": g.counts.excluded, "callers": dict(g.callers)}
    return json.dumps(data, indent=2, default=str)


def write_report(outcome: Outcome, path: str | Path, *, sandbox: bool = False) -> str:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(markdown(outcome, sandbox=sandbox), encoding="utf-8")
    return str(p)
