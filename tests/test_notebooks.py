"""The notebooks (jupytext percent scripts) run top to bottom at their small sizes."""

import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("climate_co2.py", ["alpha =", "within ±2 sd", "if the weeks were independent"]),
        (
            "econometrics_macro.py",
            ["sd solved", "credible interval]", "grouped (sgd)", "time-ordered CV", "half-life"],
        ),
        ("digits_laplace.py", ["EM-fitted alpha", "LLA (probit)", "AUROC patches"]),
        (
            "panel_fixed_effects.py",
            ["exact solver: alpha", "+ Mundlak term", "+ Mundlak, flat", "fixed effects OLS"],
        ),
    ],
)
def test_notebook_runs(tmp_path, name, expected):
    env = {**os.environ, "BLM_NOTEBOOK_SMALL": "1", "BLM_NOTEBOOK_OUT": str(tmp_path)}
    env["MPLBACKEND"] = "Agg"
    out = subprocess.run(
        [sys.executable, str(NOTEBOOKS / name)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for text in expected:
        assert text in out.stdout
    if name == "climate_co2.py":
        assert (tmp_path / "climate_co2.png").stat().st_size > 1000
    if name == "panel_fixed_effects.py":  # Mundlak's term gives the within estimate
        for label in ("Mundlak vs fixed effects: ", "flat regressors vs fixed effects: "):
            assert float(out.stdout.split(label)[1].split()[0]) < 0.5
