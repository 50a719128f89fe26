"""What a run leaves behind: the console lines, a markdown report in the ship log's table style,
and a machine-readable JSON result."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from cutover.engine import Outcome, iso
from cutover.mtls import GateVerdict
from envconfig import format_duration

EXIT_MEANING = {0: "done", 1: "failed", 2: "bad usage or config", 3: "gate RED, nothing changed",
                4: "rolled back", 5: "ROLLBACK FAILED: manual action needed"}


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

    def ask(self, prompt: str, choices: tuple[str, ...]) -> str:
        self._line(f"         {prompt} ")
        answer = (self.answers.readline() or "").strip()
        if choices and answer not in choices:
            return choices[-1]
        return answer


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
    j = outcome.journal
    if j is None:
        return []
    rows, started = [], {}
    for s in j.steps:
        if s["status"] == "started":
            started[s["step"]] = s["at"]
            continue
        took = s["at"] - started.pop(s["step"], s["at"])
        rows.append([s["step"], s["status"], iso(s["at"]), f"{took:.1f}s", s["detail"]])
    rows += [[name, "started (not finished)", iso(at), "", ""] for name, at in started.items()]
    return rows


def markdown(outcome: Outcome) -> str:
    j = outcome.journal
    out = [f"# mTLS cutover — {outcome.env} — {outcome.run_id or ''}", "",
           f"**Outcome:** {outcome.state} (exit {outcome.code}: {EXIT_MEANING.get(outcome.code, '?')})  ",
           f"**Summary:** {outcome.message}  "]
    if j:
        out += [f"**Operator:** {j.operator}  ", f"**Change:** `tls.mtls.meshWritesEnforcement` "
                f"{j.previous_mode} -> {j.target} ({j.parameter} v{j.previous_version} -> "
                f"v{j.new_version if j.new_version is not None else '-'})  ",
                f"**Started:** {iso(j.started)}"]
    if outcome.gate:
        out += ["", "## Pre-cutover gate", "", gate_text(outcome.gate)]
    rows = step_rows(outcome)
    if rows:
        out += ["", "## Steps", "", table(["Step", "Status", "At (UTC)", "Took", "Detail"], rows)]
    if outcome.probes:
        out += ["", "## Probes", "", table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(outcome.probes))]
    if outcome.rollback_probes:
        out += ["", "## Probes after rollback", "",
                table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(outcome.rollback_probes))]
    if outcome.watch:
        w = outcome.watch
        f = w.get("forbidden", {})
        out += ["", "## Watch", "", table(["Measure", "Value"], [
            ["polls", w["polls"]], ["log events read", w["events_read"]],
            ["mesh-write requests from callers", w["mesh_write_requests"]],
            ["… of which authenticated (caller field set)", w.get("authenticated_requests", 0)],
            ["probe requests", w.get("probe_requests", 0)],
            ["403 legitimate caller", f.get("legitimate", 0)], ["403 probe", f.get("probe", 0)],
            ["403 unauthenticated", f.get("unauthenticated", 0)]])]
        if not w["mesh_write_requests"]:
            out += ["", "_No mesh-write traffic from callers during the window: it proved little. "
                        "Zero traffic is not zero callers._"]
        if w.get("first_legitimate_403"):
            out += ["", f"First legitimate 403: `{w['first_legitimate_403']['message']}`"]
    if outcome.manual:
        out += ["", "## Manual action", "", "```", *outcome.manual, "```"]
    if outcome.config_written:
        out += ["", f"`{outcome.config_written}` now says `meshWritesEnforcement: "
                    f"{j.target if j and outcome.code == 0 else (j.previous_mode if j else '?')}`, so the "
                    "next `cdk deploy` agrees with production."]
    return "\n".join(out) + "\n"


def to_json(outcome: Outcome) -> str:
    data: dict[str, Any] = {
        "exit_code": outcome.code, "outcome": outcome.state, "message": outcome.message, "env": outcome.env,
        "run_id": outcome.run_id, "manual": outcome.manual, "config_written": outcome.config_written,
        "report": outcome.report_path, "watch": outcome.watch, "status": outcome.status,
        "journal": asdict(outcome.journal) if outcome.journal else None,
        "probes": [{"route": r.route, "kind": r.kind, "expect": r.expect, "statuses": list(r.statuses), "ok": r.ok}
                   for r in outcome.probes],
    }
    if outcome.gate:
        g = outcome.gate
        data["gate"] = {"green": g.green, "reasons": list(g.reasons), "patterns": dict(g.counts.patterns),
                        "routes": dict(g.counts.routes), "scanned": g.counts.scanned,
                        "excluded": g.counts.excluded, "callers": dict(g.callers)}
    return json.dumps(data, indent=2, default=str)


def write_report(outcome: Outcome, path: str | Path) -> str:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(markdown(outcome), encoding="utf-8")
    return str(p)
