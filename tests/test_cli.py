"""The README's main job, run as a user would."""

import subprocess
import sys


def test_blm_demo_runs_and_writes_the_reliability_diagram(tmp_path):
    plot = tmp_path / "rel.png"
    out = subprocess.run(
        [sys.executable, "-m", "blm", "demo", "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("MAP", "LLA (mc)", "LLA (probit)"):
        assert row in out.stdout
    assert "EM-fitted alpha" in out.stdout
    assert plot.exists() and plot.stat().st_size > 1000
