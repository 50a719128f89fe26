"""Shared helpers for the benchmarks: statistics, machine facts, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))
STARTED = time.time()
LOAD_AT_START = os.getloadavg()  # this machine runs other work too: every result says how busy it was


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "p95": p95(values),
            "min": min(values), "max": max(values)}


def _proc_field(path: str, field: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(field)), "")


def machine() -> dict:
    mem, cpu = _proc_field("/proc/meminfo", "MemTotal"), _proc_field("/proc/cpuinfo", "model name")
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "cpu": cpu, "memory": mem,
            "platform": platform.platform()}


def load_note() -> dict:
    """The 1-minute load average when the script started and when it saved, and its wall time."""
    return {"load_at_start": round(LOAD_AT_START[0], 2), "load_at_end": round(os.getloadavg()[0], 2),
            "wall_seconds": round(time.time() - STARTED, 1), "commit": git_rev()}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "run": load_note(), **data}, indent=2, default=str))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return "?"
