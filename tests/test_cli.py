"""The README's main job, run as a user would."""

import subprocess
import sys


def test_blm_demo_runs_and_writes_the_reliability_diagram(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "blm", "demo", "--out-dir", "demo-out"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {
        line[:20].strip(): [float(v) for v in line[20:].replace("|", " ").split()]
        for line in out.stdout.splitlines()
        if line.startswith(("MAP ", "LLA ", "last layer "))
    }
    assert set(rows) == {"MAP", "LLA (mc)", "LLA (probit)", "last layer (probit)"}
    assert "shift NLL" in out.stdout
    # under shift (digits rotated by 30°, labels kept) linearised Laplace beats the MAP on
    # NLL and ECE (seed 0: 1.57 / 0.10 against 2.14 / 0.29); columns end NLL, ECE, acc
    assert rows["LLA (probit)"][-3] < 0.85 * rows["MAP"][-3]
    assert rows["LLA (probit)"][-2] < 0.6 * rows["MAP"][-2]
    assert "EM-fitted alpha" in out.stdout
    plot = tmp_path / "demo-out" / "reliability.png"
    assert plot.exists() and plot.stat().st_size > 1000
    assert (tmp_path / "demo-out" / "table.txt").read_text().startswith("method")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-out"]  # nothing else written
    # the table explains itself, and stderr (not a terminal here) holds no progress bars
    assert "lower is better" in out.stdout and "What linearised Laplace buys" in out.stdout
    assert len(out.stderr) < 10_000, out.stderr[-2000:]


def test_importing_blm_leaves_out_what_only_some_commands_need():
    """Every ``blm`` command pays for ``import blm``: scipy.stats (0.6 s of a 3 s import
    here), scikit-learn and matplotlib load where they are used, not at import."""
    code = "import sys, blm; print(sorted(m for m in ('scipy.stats', 'sklearn', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
