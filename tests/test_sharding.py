"""Data parallelism over 4 host CPU devices equals the one-device run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import blm

SCRIPT = pathlib.Path(__file__).parent / "sharded_run.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shard")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name, four",
    [
        ("sgd", "4"),
        ("cg-hdf5", "4"),
        ("sgd-hdf5", "4"),
        ("sgd", "4-split-d"),
        ("sgd-hdf5", "4-split-d"),
    ],
)
def test_four_devices_equal_one(runs, name, four):
    """Rows split over 4 devices (parameters replicated, or split along d too), and the
    covariance of two coefficients solved by cg after the fit."""
    one, four = runs[f"{name}/1"], runs[f"{name}/{four}"]
    for key in ("alpha", "beta", "coef", "samples", "covariance"):
        np.testing.assert_allclose(four[key], one[key], rtol=1e-9, atol=1e-12)


def test_shard_parameters_keeps_the_iterate_split_along_d(runs):
    assert runs["samples_spec"] == ["None", "data"]
    assert runs["samples_shard"] == [3, 24 // 4]


def test_blocks_are_split_along_rows_and_summed_across_devices(runs):
    assert runs["mesh"] == 4 and runs["block_devices"] == 4
    assert runs["block_spec"] == ["data"]
    assert runs["all_reduce"]


def test_outside_data_parallel_nothing_moves():
    x = np.ones((8, 2))
    assert blm.sharding.put_rows(x) is x
    assert blm.sharding.row_sharding() is None
    with pytest.raises(ValueError, match="devices: need at least one device"):
        with blm.data_parallel([]):
            pass
    with pytest.raises(TypeError, match="shard_parameters"):
        with blm.data_parallel(shard_parameters="yes"):
            pass
