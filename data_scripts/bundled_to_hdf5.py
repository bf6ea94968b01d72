"""Turn bundled real data sets into HDF5 files that ``blm fit`` and ``HDF5Dataset`` read.

    python data_scripts/bundled_to_hdf5.py co2 OUT.h5 [--features 2000]
    python data_scripts/bundled_to_hdf5.py macro OUT.h5 [--lags 4]
    python data_scripts/bundled_to_hdf5.py diabetes OUT.h5
    python data_scripts/bundled_to_hdf5.py iris OUT.h5
    python data_scripts/bundled_to_hdf5.py breast_cancer OUT.h5

Layout of every file (data_scripts/README.md):

- ``X`` (n, p) float64: the design, one row per observation;
- ``y`` (n,) float64: the target (iris, breast_cancer: class labels as strings, for
  ``blm fit --likelihood categorical|bernoulli``);
- ``groups`` (p,) int32: the prior group of each column (``blm fit --groups groups``);
- ``X`` attribute ``columns``: a name per column; ``groups`` attribute ``names``: a
  name per group; ``y`` attribute ``units``; file attributes ``source`` and
  ``description``.

co2: statsmodels' weekly Mauna Loa CO₂ (ppm) on a quadratic trend in time and random
Fourier features of time (lengthscale 0.5 years): groups trend / rff.
macro: statsmodels' macrodata, inflation (% p.a.) on nine standardised indicators and
their lags: one group per indicator.
diabetes: scikit-learn's diabetes progression on its ten standardised covariates: one
group.
iris: scikit-learn's iris species (setosa, versicolor, virginica) on the four flower
measurements (cm): groups sepal / petal.
breast_cancer: scikit-learn's Wisconsin tumours (malignant, benign) on the 30
standardised image features: groups mean / error / worst.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from blm.datasets import MACRO_INDICATORS, co2_design, macro_design
from blm.h5io import atomic_h5


def co2(features: int) -> dict:
    X, y, _ = co2_design(n_features=features, lengthscale=0.5)
    columns = ["(t/10)^1", "(t/10)^2"] + [f"rff{i}" for i in range(features)]
    groups = np.r_[np.zeros(2), np.ones(features)].astype(np.int32)
    return dict(
        X=X,
        y=y,
        groups=groups,
        columns=columns,
        group_names=["trend", "rff"],
        units="ppm",
        source="statsmodels.datasets.co2",
        description="weekly CO2 at Mauna Loa on a quadratic trend and random Fourier features of time (years since 1958)",
    )


def macro(lags: int) -> dict:
    X, y, groups = macro_design(lags=lags)
    columns = [f"{name}_lag{lag}" for lag in range(lags + 1) for name in list(MACRO_INDICATORS)]
    return dict(
        X=X,
        y=y,
        groups=groups.astype(np.int32),
        columns=columns,
        group_names=list(MACRO_INDICATORS),
        units="percent per year",
        source="statsmodels.datasets.macrodata",
        description="US inflation on standardised indicators (growth rates, rates) and their lags",
    )


def diabetes() -> dict:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return dict(
        X=data.data,
        y=data.target,
        groups=np.zeros(data.data.shape[1], np.int32),
        columns=list(data.feature_names),
        group_names=["covariates"],
        units="disease progression one year after baseline",
        source="sklearn.datasets.load_diabetes",
        description="diabetes progression on ten standardised baseline covariates",
    )


def iris() -> dict:
    from sklearn.datasets import load_iris

    data = load_iris()
    return dict(
        X=data.data,
        y=np.asarray(data.target_names)[data.target],
        groups=np.array([0, 0, 1, 1], np.int32),
        columns=["sepal_length", "sepal_width", "petal_length", "petal_width"],
        group_names=["sepal", "petal"],
        units="species",
        source="sklearn.datasets.load_iris",
        description="iris species on four flower measurements (cm)",
    )


def breast_cancer() -> dict:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    return dict(
        X=X,
        y=np.asarray(data.target_names)[data.target],
        groups=np.repeat(np.arange(3, dtype=np.int32), 10),
        columns=[name.replace(" ", "_") for name in data.feature_names],
        group_names=["mean", "error", "worst"],
        units="diagnosis",
        source="sklearn.datasets.load_breast_cancer",
        description="tumour diagnosis on 30 standardised image features",
    )


def write(path: str, d: dict) -> None:
    """Write ``d`` in the documented layout (temporary name, then renamed)."""
    with atomic_h5(path) as f:
        y = d["y"]
        if y.dtype.kind == "U":  # class labels
            y = y.astype(object).astype(h5py.string_dtype())
        f["X"], f["y"], f["groups"] = d["X"], y, d["groups"]
        f["X"].attrs["columns"] = np.asarray(d["columns"], dtype=h5py.string_dtype())
        f["groups"].attrs["names"] = np.asarray(d["group_names"], dtype=h5py.string_dtype())
        f["y"].attrs["units"] = d["units"]
        f.attrs["source"], f.attrs["description"] = d["source"], d["description"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=("co2", "macro", "diabetes", "iris", "breast_cancer"))
    parser.add_argument("out")
    parser.add_argument("--features", type=int, default=2000, help="co2: random Fourier features")
    parser.add_argument("--lags", type=int, default=4, help="macro: lags per indicator")
    args = parser.parse_args(argv)
    d = {
        "co2": lambda: co2(args.features),
        "macro": lambda: macro(args.lags),
        "diabetes": diabetes,
        "iris": iris,
        "breast_cancer": breast_cancer,
    }[args.name]()
    write(args.out, d)
    print(
        f"{args.name}: X {d['X'].shape}, y {d['y'].shape}, {len(d['group_names'])} groups -> {args.out}"
    )


if __name__ == "__main__":
    main()
