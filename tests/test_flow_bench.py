"""Smoke test of benchmarks/bench_flow.py (tiny size, one repeat)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_flow_runs_and_prints_a_row():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_flow.py"), "--sizes", "40x64",
                        "--batch", "2", "--repeats", "1", "--threads", "1", "--baseline"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.strip().startswith("40x64")]
    assert len(rows) == 1
    ms, seq = float(rows[0][2]), float(rows[0][7])
    assert ms > 0 and seq > 0
