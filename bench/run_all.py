"""`make bench`: run every benchmark (about 80 minutes on 2 cores), then write docs/benchmarks.md.

Each script also runs on its own (`.venv/bin/python bench/NAME.py`) and leaves its figures in
bench/results/NAME.json; `bench/report.py` turns those files into the markdown.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["startup", "probe_round", "gate_cost", "watch_cost", "live_tail", "sentinel_cost", "detection_latency",
         "exposure_before_after", "harm_per_incident", "build_and_tests"]


def main() -> None:
    only = sys.argv[1:] or ORDER
    for name in only:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / f"{name}.py")], check=True)
    subprocess.run([sys.executable, str(HERE / "report.py")], check=True)


if __name__ == "__main__":
    main()
