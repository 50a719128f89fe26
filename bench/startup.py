"""4. Start-up: `python -m cutover --help` wall time and what it imports (target <= 0.5 s; no
aws_cdk, jsii or moto)."""

from __future__ import annotations

import subprocess
import sys
import time

from common import ROOT, save, summary

RUNS = 20


def main() -> None:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cutover", "--help"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    probe = ("import sys, runpy\nsys.argv=['cutover','--help']\n"
             "try:\n    runpy.run_module('cutover', run_name='__main__')\nexcept SystemExit: pass\n"
             "mods = sorted({m.split('.')[0] for m in sys.modules})\nprint('MODS', ' '.join(mods))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    mods = out.split("MODS", 1)[1].split()
    heavy = [m for m in ("aws_cdk", "jsii", "moto", "boto3", "botocore") if m in mods]
    save("startup", {"help_seconds": summary(times), "top_level_modules": len(mods), "heavy_imported": heavy,
                     "target_seconds": 0.5})
    s = summary(times)
    print(f"--help: median {s['median']:.3f}s p95 {s['p95']:.3f}s; heavy modules imported: {heavy or 'none'}")


if __name__ == "__main__":
    main()
