"""Issue 9: the sentinel's added time per run.

The sentinel (an authenticated caller the tool controls, sent without a certificate after the
flip) adds its requests to the strict probe round, and the proof step then waits until its 403s
come back from the log group with its caller, and every task's own stream shows a strict 403.

Runs of the current tool (`python -m cutover mtls --strict --yes --poll 2s --watch 4s`, the
sandbox config's poll, a short window) in a process of its own, each against a fresh `clean`
world (rolling, 2 tasks, the default 0.6 s per task), alternating with and without
`--no-sentinel`. From the journal the tool leaves in the world's SSM: the probe round (`probe`
started -> done), the proof (`probe` done -> `proof` done), and the whole run (the process's
wall time). Without a sentinel the proof step still waits for every task's own strict 403, so
the difference of the two is what the sentinel itself adds.

Run: .venv/bin/python bench/sentinel_cost.py [--runs 8]
"""

from __future__ import annotations

import argparse
import statistics

from common import save, summary
from incident import journal, run_tool, step_at, tool_command, world


def one(sentinel: bool) -> dict:
    with world("clean", strategy="rolling") as w:
        extra = () if sentinel else ("--no-sentinel",)
        r = run_tool(w, tool_command(w.config_dir, "--poll=2s", "--watch=4s", *extra))
        j = journal(w) or {}
    probe_started, probe_done, proof_done = step_at(j, "probe"), step_at(j, "probe", "done"), step_at(j, "proof", "done")
    row = {"sentinel": sentinel, "code": r["code"], "journal_sentinel": j.get("sentinel"),
           "wall": round(r["ended"] - r["started"], 3)}
    if None not in (probe_started, probe_done, proof_done):
        row.update(probe=round(probe_done - probe_started, 3), proof=round(proof_done - probe_done, 3),
                   probe_and_proof=round(proof_done - probe_started, 3))
    if r["code"] != 0:
        row["tool_output"] = r["stdout"][-1500:] + r["stderr"][-800:]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8, help="runs with and as many without the sentinel")
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {"with": [], "without": []}
    for i in range(a.runs):
        for with_sentinel in ((True, False) if i % 2 == 0 else (False, True)):
            row = one(with_sentinel)
            rows["with" if with_sentinel else "without"].append(row)
            print(f"run {i + 1} {'with' if with_sentinel else 'without'} sentinel: exit {row['code']}, probe "
                  f"{row.get('probe')}s, proof {row.get('proof')}s, whole run {row['wall']}s", flush=True)
    out: dict = {}
    for k, rs in rows.items():
        ok = [r for r in rs if r["code"] == 0 and "probe" in r]
        out[k] = {"runs": len(rs), "exit_0": len(ok),
                  **{m: summary([r[m] for r in ok]) for m in ("probe", "proof", "probe_and_proof", "wall") if ok}}
    added = {}
    if out["with"].get("probe_and_proof") and out["without"].get("probe_and_proof"):
        for m in ("probe", "proof", "probe_and_proof", "wall"):
            added[m] = round(out["with"][m]["median"] - out["without"][m]["median"], 3)
        added["proof_mean"] = round(statistics.mean(r["proof"] for r in rows["with"] if "proof" in r)
                                    - statistics.mean(r["proof"] for r in rows["without"] if "proof" in r), 3)
    save("sentinel_cost", {"runs_each": a.runs, "poll": 2.0, "watch": 4.0, "summary": out,
                           "added_by_sentinel_median": added, "rows": rows})
    print(f"sentinel adds (medians): {added}")


if __name__ == "__main__":
    main()
