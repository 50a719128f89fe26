"""Issue 12: exposure from the flip, before and after "one watch from the flip".

The same incident, in the same world, for two engines: the `unenrolled-caller` sandbox scenario
(brainstorm-cli with its API key and no certificate, 5 requests/s from the moment the world sees
the parameter become strict), a rolling rollout of 2 tasks at `--steps` seconds per task, the
tool polling every `--poll` seconds.

  before  the wave-1 engine: the parent of the engine rewrite (615740b^), exported with
          `git archive` into a temporary directory and run from there, unchanged. Its watch began
          only after the redeploy had COMPLETED and the probes had passed.
  after   the engine of this checkout: one watch from the flip (the redeploy wait, the probes,
          the sentinel's proof and the window all poll the access log).

Both run as `python -m cutover mtls --strict --yes` in a process of their own against a fresh
world per trial (world in this process), alternating before/after so that the machine's load
falls on both alike. The wave-1 engine gets the wave-1 config file (its schema predates
service.deployment) with the world's probe URL, certificates and CA put in, exactly as the
world's own copy does for the current engine.

Measured from the world's own records (its answers to the caller, its view of the parameter,
its tasks): refused requests, and the exposure = first 403 -> first served request after the
rollback (the last strict task stopped; bench/incident.py says why not simply the next 2xx). Issue 12's target, per trial:
exposure <= (first strict task takes traffic, from the flip) + poll + 1 s + the rollback's own
redeploy (the restored parameter -> the last strict task stopped).

Run: .venv/bin/python bench/exposure_before_after.py [--trials 10] [--steps 2,5] [--poll 1]
(needs the repository's git history: the wave-1 engine is taken from it with `git archive`)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

import yaml
from common import ROOT, save
from incident import harm, journal, parameter_back, run_tool, settle, step_at, tool_command, world

REWRITE = "615740b"  # "Engine as a state machine ...; one watch from the flip"
CALLER_RATE = [0.0]  # requests/s of the unenrolled caller, as the world sets it


def export_wave1(into: Path) -> str:
    rev = subprocess.run(["git", "rev-parse", f"{REWRITE}^"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return rev


def wave1_config(w, wave1: Path) -> Path:
    data = yaml.safe_load((wave1 / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    p = w.cfg.cutover.probes
    data["cutover"]["probes"].update(base_url=p.base_url, client_cert=p.client_cert, client_key=p.client_key,
                                     ca_bundle=p.ca_bundle)
    d = w.directory / "wave1-config"
    d.mkdir()
    (d / "sandbox.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return d


def trial(version: str, step: float, poll: float, wave1: Path) -> dict:
    with world("unenrolled-caller", strategy="rolling", rollout_step=step) as w:
        CALLER_RATE[0] = round(1 / w.traffic.unenrolled_interval, 2)
        args = (f"--poll={poll:g}s", "--watch=20s")
        if version == "before":
            r = run_tool(w, tool_command(wave1_config(w, wave1), *args), code_root=wave1)
        else:
            r = run_tool(w, tool_command(w.config_dir, *args))
        settle(w)
        st = w.state()
        j = journal(w)
    flip = st["flip_at"]
    h = harm(st)
    strict = [t for t in st["tasks"] if t["mode"] == "strict"]
    first_strict = min((t["started_at"] for t in strict), default=None)
    last_strict_stop = max((t["stopped_at"] or 0 for t in strict), default=None)
    restored = parameter_back(st, flip)
    detected = step_at(j, "rollback")
    out = {"version": version, "code": r["code"], **h,
           "first_task_traffic": round(first_strict - flip, 3) if first_strict and flip else None,
           "rollback_redeploy": round(last_strict_stop - restored, 3) if last_strict_stop and restored else None,
           "detection_after_first_403": round(detected - h["first_403"], 3) if detected and h["first_403"] else None,
           "restored_after_first_403": round(restored - h["first_403"], 3) if restored and h["first_403"] else None,
           "watch_began_after_flip": None, "rollback_during": None}
    # Where the engine was when it decided: the last forward step started before the rollback.
    forward = [s for s in (j or {}).get("steps", []) if s["status"] == "started"
               and s["step"] in ("redeploy", "probe", "proof", "watch") and detected and s["at"] <= detected]
    out["rollback_during"] = forward[-1]["step"] if forward else None
    watch = step_at(j, "watch")
    out["watch_began_after_flip"] = round(watch - flip, 3) if watch and flip else None
    if h["first_403"] is not None:
        out["first_403_after_flip"] = round(h["first_403"] - flip, 3)
    if None not in (out["first_task_traffic"], out["rollback_redeploy"], h["exposure"]):
        out["target"] = round(out["first_task_traffic"] + poll + 1 + out["rollback_redeploy"], 3)
        out["meets_target"] = h["exposure"] <= out["target"]
    if r["code"] != 4:
        out["tool_output"] = r["stdout"][-1500:] + r["stderr"][-800:]
    return out


def summarize(rows: list[dict]) -> dict:
    def med(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(vals), 3) if vals else None

    def p95(key: str) -> float | None:
        vals = sorted(r[key] for r in rows if r.get(key) is not None)
        return vals[min(len(vals) - 1, max(0, round(0.95 * len(vals)) - 1))] if vals else None

    return {"trials": len(rows), "exit_4": sum(1 for r in rows if r["code"] == 4),
            "refused_median": med("refused"), "refused_max": max(r["refused"] for r in rows),
            "exposure_median": med("exposure"), "exposure_p95": p95("exposure"),
            "exposure_max": max((r["exposure"] or 0) for r in rows),
            "detection_after_first_403_median": med("detection_after_first_403"),
            "first_task_traffic_median": med("first_task_traffic"), "rollback_redeploy_median": med("rollback_redeploy"),
            "target_median": med("target"), "meets_target": sum(1 for r in rows if r.get("meets_target")),
            "rollback_during": {k: sum(1 for r in rows if r["rollback_during"] == k)
                                for k in sorted({str(r["rollback_during"]) for r in rows})}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--steps", default="2,5", help="seconds per task in the rolling rollout (2 tasks)")
    ap.add_argument("--poll", type=float, default=1.0)
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="wave1-") as tmp:
        wave1 = Path(tmp)
        rev = export_wave1(wave1)
        for step in (float(s) for s in a.steps.split(",")):
            rows: dict[str, list[dict]] = {"before": [], "after": []}
            for i in range(a.trials):
                for version in (("before", "after") if i % 2 == 0 else ("after", "before")):
                    row = trial(version, step, a.poll, wave1)
                    rows[version].append(row)
                    print(f"step {step:g}s trial {i + 1} {version}: exit {row['code']}, refused {row['refused']}, "
                          f"exposure {row['exposure']}s (target {row.get('target')}s), decided during "
                          f"{row['rollback_during']}", flush=True)
            results[f"{step:g}s"] = {"step": step, "summary": {v: summarize(r) for v, r in rows.items()},
                                     "trials": rows}
    save("exposure_before_after", {"before_commit": rev, "rewrite_commit": REWRITE, "poll": a.poll,
                                   "tasks": 2, "caller_rate_per_s": CALLER_RATE[0], "trials": a.trials, "results": results})


if __name__ == "__main__":
    main()
