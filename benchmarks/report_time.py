"""Time the report step on the results of a finished run of the pipeline.

Run from the repository root after `uv run snakemake --cores 2`:

    uv run python benchmarks/report_time.py

It runs `lambda-hat report` on results/llc.parquet three times into a temporary
directory and appends wall and CPU seconds, with the load average, to
benchmarks/report_time.md.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "report_time.md"
REPEATS = 3


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    llc = ROOT / "results" / "llc.parquet"
    if not llc.is_file():
        sys.exit(f"{llc} is missing: run the pipeline first")
    runs = len(list((ROOT / "results" / "runs").glob("*/*/*/draws.parquet")))
    lines = []
    for i in range(REPEATS):
        with tempfile.TemporaryDirectory() as out:
            load = os.getloadavg()[0]
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            subprocess.run(
                [
                    Path(sys.executable).parent / "lambda-hat",
                    "report",
                    "--llc",
                    llc,
                    "--runs-dir",
                    ROOT / "results" / "runs",
                    "--out-dir",
                    out,
                ],
                check=True,
                capture_output=True,
            )
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        lines.append(f"| {i + 1} | {runs} | {wall:.1f} | {cpu:.1f} | {load:.1f} |")
        print(lines[-1])
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    header = (
        f"\n## {stamp}, {os.cpu_count()} CPUs\n\n"
        "| try | runs | wall s | CPU s | load average (1 min) before |\n"
        "| --- | --- | --- | --- | --- |\n"
    )
    if not OUT.exists():
        OUT.write_text(
            "# The report step's time\n\nWritten by `benchmarks/report_time.py`: "
            "`lambda-hat report` on the results of the default config.\n"
        )
    with OUT.open("a") as f:
        f.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
