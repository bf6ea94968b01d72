"""Generate large regression problems straight to HDF5, block by block (seeded).

    python data_scripts/synthetic_hdf5.py dense OUT.h5 [--n 1000000] [--d 1000]
    python data_scripts/synthetic_hdf5.py panel OUT.h5 [--units 999960] [--times 20] [--covariates 20]

dense: ``X`` (n, d) float32 with decaying column scales s_j = (1 + j)^(-1/2) and a random
rotation-free spectrum, ``y`` = Xθ* + N(0, 0.5²), θ* ~ N(0, 1); layout as
``bundled_to_hdf5.py`` (``X``, ``y``, file attributes ``source``, ``description``).

panel: an unbalanced panel, each unit observed in two random periods (n = 2 × units
rows). Columns: one-hot unit effects (units), one-hot time effects (times), then
``covariates`` dense N(0, 1) covariates: d = units + times + covariates, 2 +
covariates non-zeros per row. ``X`` is a CSR group (``data`` float32, ``indices``
int32, ``indptr`` int64, attribute ``shape``), read by ``blm.SparseHDF5Dataset``;
``groups`` (d,) int32: 0 unit effects, 1 time effects, 2 covariates (``names``
attribute); ``y`` = unit effect (sd 1) + time effect (sd 0.5) + covariates · β* +
N(0, 0.5²). Memory: one block of rows at a time.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from blm.h5io import atomic_h5

BLOCK = 50_000


def dense(path: str, n: int, d: int, seed: int = 0) -> None:
    """Write the dense problem (see the module docstring)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(d)) ** -0.5
    theta = rng.standard_normal(d)
    with atomic_h5(path) as f:
        X = f.create_dataset("X", (n, d), "f4", chunks=(min(n, 4096), d))
        y = f.create_dataset("y", (n,), "f8")
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            xb = rng.standard_normal((stop - start, d)) * scale
            X[start:stop] = xb
            y[start:stop] = xb.astype(np.float32) @ theta + 0.5 * rng.standard_normal(stop - start)
        f.attrs["source"] = "data_scripts/synthetic_hdf5.py dense"
        f.attrs["description"] = f"y = X theta + N(0, 0.25), n={n}, d={d}, column scales (1+j)^-1/2"


def panel(path: str, units: int, times: int, covariates: int, seed: int = 0) -> None:
    """Write the sparse panel (see the module docstring)."""
    rng = np.random.default_rng(seed)
    unit_effect = rng.standard_normal(units)
    time_effect = 0.5 * rng.standard_normal(times)
    beta = rng.standard_normal(covariates)
    n, d, width = 2 * units, units + times + covariates, 2 + covariates
    with atomic_h5(path) as f:
        g = f.create_group("X")
        data = g.create_dataset("data", (n * width,), "f4")
        indices = g.create_dataset("indices", (n * width,), "i4")
        g["indptr"] = np.arange(n + 1, dtype=np.int64) * width
        g.attrs["shape"] = (n, d)
        y = f.create_dataset("y", (n,), "f8")
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            b = stop - start
            unit = np.arange(start, stop) // 2
            time = rng.integers(0, times, b)
            cov = rng.standard_normal((b, covariates))
            cols = np.hstack(
                [
                    unit[:, None],
                    units + time[:, None],
                    units + times + np.arange(covariates)[None].repeat(b, 0),
                ]
            )
            vals = np.hstack([np.ones((b, 2)), cov])
            data[start * width : stop * width] = vals.ravel()
            indices[start * width : stop * width] = cols.ravel()
            y[start:stop] = (
                unit_effect[unit] + time_effect[time] + cov @ beta + 0.5 * rng.standard_normal(b)
            )
        f["groups"] = np.r_[np.zeros(units), np.ones(times), np.full(covariates, 2)].astype(
            np.int32
        )
        f["groups"].attrs["names"] = np.asarray(
            ["unit", "time", "covariates"], dtype=h5py.string_dtype()
        )
        f.attrs["source"] = "data_scripts/synthetic_hdf5.py panel"
        f.attrs["description"] = (
            f"unbalanced panel: {units} units x 2 of {times} periods, {covariates} covariates"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=("dense", "panel"))
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument("--units", type=int, default=999_960)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--covariates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "dense":
        dense(args.out, args.n, args.d, args.seed)
    else:
        panel(args.out, args.units, args.times, args.covariates, args.seed)
    print(f"{args.kind} -> {args.out}")


if __name__ == "__main__":
    main()
