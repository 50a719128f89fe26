"""Issue 10: harm per incident, rolling vs ECS-native canary side by side in one run, and the time to
restore with nobody at the keyboard (`operator-vanishes`).

Harm: the `unenrolled-caller` scenario (brainstorm-cli with its API key and no certificate, 5
requests/s from the moment the world sees the parameter become strict) against the current tool
(`python -m cutover mtls --strict --yes --poll 1s`, in a process of its own), a fresh world per
trial, the strategies alternating trial by trial:

  rolling       2 tasks replaced one at a time, `--step` seconds each; the tool restores the
                parameter and redeploys
  canary        ECS-native canary (canaryPercent 10, canary bake 5 min, bake 30 min, at the
                world's time scale of 1 s per configured minute: 5 s and 30 s); the tool stops
                the service deployment (traffic back to blue), the world's legitimate-403
                deployment alarm may roll it back first, the restorer Lambda restores the flag
  canary, tool alone
                the same, with the stand-in's deployment alarms off (Plan.alarm_names = ()), so
                only the tool acts: what the tool alone achieves

Measured from the world's own record of the caller's answers (bench/incident.py): refused
requests; exposure = first 403 -> first served request after the rollback (the last strict
task stopped: rolling, replaced by the rollback's redeploy; canary, green stopped as traffic
went back to blue; bench/incident.py); detection = the first of the tool's rollback decision
(its journal) and the world's legitimate-403 alarm going to ALARM where ECS acts on it (canary
with deployment alarms); served again after detection. Issue 10's targets: canary refuses at
most about the canary percentage of what rolling refuses; the caller is served again within 5 s
of detection.

operator-vanishes (canary): cutover/sandbox/vanish.py's story, played by its own `play`: the tool
runs in its own process and is SIGKILLed as soon as its journal says `watching`; the caller
starts when the deployment bakes; the legitimate-403 alarm, ECS's rollback and the restorer must
undo it. Measured: first 403 -> served again (traffic back on blue), first 403 -> the parameter
advisory again (the world's view), and who restored it (the journal).

Run: .venv/bin/python bench/harm_per_incident.py [--trials 10] [--vanish-trials 10] [--step 2]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time

from common import RESULTS, ROOT, load_note, p95, save
from incident import harm, journal, parameter_back, run_tool, settle, step_at, tool_command, world

from cutover.report import ConsoleUi

VARIANTS = {"rolling": ("rolling", None), "canary": ("canary", None),
            "canary_tool_alone": ("canary", {"alarm_names": ()})}


def alarm_at(st: dict) -> float | None:
    return next((float(t) for t, s in st["legitimate_403_alarm"]["transitions"] if s == "ALARM"), None)


def trial(variant: str, step: float, poll: float) -> dict:
    strategy, plan = VARIANTS[variant]
    with world("unenrolled-caller", strategy=strategy, rollout_step=step, plan=plan) as w:
        r = run_tool(w, tool_command(w.config_dir, f"--poll={poll:g}s", "--watch=20s"))
        settle(w)
        st = w.state()
        j = journal(w) or {}
        rate = round(1 / w.traffic.unenrolled_interval, 2)
        percent = w.plan.canary_percent
        alarm_acts = w.plan.strategy == "canary" and bool(w.plan.alarm_names)  # ECS rolls back on it
    tool_at = step_at(j, "rollback")
    alarm = alarm_at(st) if alarm_acts else None
    acted = [(t, who) for t, who in ((tool_at, "tool"), (alarm, "alarm")) if t is not None]
    detected, first_actor = min(acted) if acted else (None, None)
    h = harm(st, detected_at=detected)
    flip = st["flip_at"]
    restored = parameter_back(st, flip)
    row = {"variant": variant, "code": r["code"], **h, "caller_rate_per_s": rate, "canary_percent": percent,
           "detected_by": first_actor, "restored_by": (j.get("restore") or {}).get("by"),
           "detection_after_first_403": round(detected - h["first_403"], 3) if detected and h["first_403"] else None,
           "parameter_back_after_first_403": round(restored - h["first_403"], 3) if restored and h["first_403"]
           else None,
           "first_403_after_flip": round(h["first_403"] - flip, 3) if h["first_403"] and flip else None,
           "tool_decided_after_first_403": round(tool_at - h["first_403"], 3) if tool_at and h["first_403"] else None}
    if r["code"] != 4:
        row["tool_output"] = r["stdout"][-1500:] + r["stderr"][-800:]
    return row


def vanish_trial() -> dict:
    from cutover.sandbox.vanish import play

    ui_out = io.StringIO()
    with world("operator-vanishes", strategy="canary") as w:
        t0 = time.time()
        code = play(w, ConsoleUi(ui_out), extra_args=["--poll=1s", "--watch=20s"])
        settle(w)
        deadline = time.monotonic() + 30
        while parameter_back(w.state(), w.state()["flip_at"]) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        st = w.state()
        j = journal(w) or {}
    h = harm(st)
    restored = parameter_back(st, st["flip_at"])
    return {"code": code, "final_state": j.get("state"), **h, "restored_by": (j.get("restore") or {}).get("by"),
            "served_again_after_first_403": h["exposure"],
            "advisory_again_after_first_403": round(restored - h["first_403"], 3) if restored and h["first_403"]
            else None,
            "alarm_after_first_403": round(alarm_at(st) - h["first_403"], 3) if alarm_at(st) and h["first_403"]
            else None,
            "story_seconds": round(time.time() - t0, 1),
            "status_line": next((ln.strip() for ln in ui_out.getvalue().splitlines() if "status:" in ln), "")}


def stats(rows: list[dict], key: str) -> dict | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    return {"n": len(vals), "median": round(statistics.median(vals), 3), "p95": round(p95(vals), 3),
            "min": round(min(vals), 3), "max": round(max(vals), 3), "mean": round(statistics.mean(vals), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--vanish-trials", type=int, default=10)
    ap.add_argument("--step", type=float, default=2.0, help="seconds for one task to start")
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--vanish-only", action="store_true",
                    help="rerun only the operator-vanishes trials; keep the strategy rows of the last results file")
    a = ap.parse_args()
    if a.vanish_only:
        path = RESULTS / "harm_per_incident.json"
        previous = json.loads(path.read_text())
        previous["operator_vanishes"] = vanish_block(a.vanish_trials)
        previous["operator_vanishes_run"] = load_note()  # its own commit and load: the rows above keep theirs
        path.write_text(json.dumps(previous, indent=2, default=str))
        print(f"wrote {path.relative_to(ROOT)} (operator-vanishes only)")
        return
    variants = a.variants.split(",")
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    for i in range(a.trials):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for v in order:
            row = trial(v, a.step, a.poll)
            rows[v].append(row)
            print(f"trial {i + 1} {v}: exit {row['code']}, refused {row['refused']}, exposure {row['exposure']}s, "
                  f"detected by {row['detected_by']} {row['detection_after_first_403']}s after the first 403, "
                  f"served again {row.get('served_again_after_detection')}s after detection", flush=True)
    summary = {}
    for v, rs in rows.items():
        summary[v] = {"trials": len(rs), "exit_4": sum(1 for r in rs if r["code"] == 4),
                      "refused": stats(rs, "refused"), "exposure": stats(rs, "exposure"),
                      "detection_after_first_403": stats(rs, "detection_after_first_403"),
                      "served_again_after_detection": stats(rs, "served_again_after_detection"),
                      "within_5s_of_detection": sum(1 for r in rs if r.get("served_again_after_detection") is not None
                                                    and r["served_again_after_detection"] <= 5),
                      "detected_by": {k: sum(1 for r in rs if r["detected_by"] == k) for k in ("tool", "alarm")},
                      "restored_by": {str(k): sum(1 for r in rs if r["restored_by"] == k)
                                      for k in sorted({str(r["restored_by"]) for r in rs})}}
    ratio = {}
    if "rolling" in rows:
        base = statistics.mean(r["refused"] for r in rows["rolling"])
        for v in rows:
            if v != "rolling" and base:
                ratio[v] = round(statistics.mean(r["refused"] for r in rows[v]) / base, 3)
    save("harm_per_incident", {"trials": a.trials, "step": a.step, "poll": a.poll, "seconds_per_minute": 1.0,
                               "summary": summary, "refused_ratio_to_rolling": ratio, "rows": rows,
                               "operator_vanishes": vanish_block(a.vanish_trials)})


def vanish_block(trials: int) -> dict:
    vanish = []
    for i in range(trials):
        row = vanish_trial()
        vanish.append(row)
        print(f"operator-vanishes {i + 1}: exit {row['code']}, refused {row['refused']}, served again "
              f"{row['served_again_after_first_403']}s and advisory again {row['advisory_again_after_first_403']}s "
              f"after the first 403, restored by {row['restored_by']}", flush=True)
    vanish_summary = {"trials": len(vanish), "exit_4": sum(1 for r in vanish if r["code"] == 4),
                      "restored_by_restorer": sum(1 for r in vanish if r["restored_by"] == "restorer"),
                      "refused": stats(vanish, "refused"),
                      "served_again_after_first_403": stats(vanish, "served_again_after_first_403"),
                      "advisory_again_after_first_403": stats(vanish, "advisory_again_after_first_403"),
                      "alarm_after_first_403": stats(vanish, "alarm_after_first_403")}
    return {"summary": vanish_summary, "rows": vanish}


if __name__ == "__main__":
    main()
