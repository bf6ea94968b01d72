"""Streamed HDF5 regressions too large for memory-bound tools, fitted block by block.

(a) dense: n = 1 000 000 rows × d = 1 000 columns (float32 on disk, 4 GB);
(b) sparse panel: n = 2 000 000 rows × d = 1 000 000 columns (one-hot unit and time
    effects plus 20 dense covariates per row, CSR on disk).

Both are generated to disk block by block by ``data_scripts/synthetic_hdf5.py`` and
fitted by ``BayesianLinearRegression(n_samples=8, max_iter=3)`` (3 sample-based MacKay EM
steps, one α per prior group for the panel) reading the file in row blocks: (a) with
``solver="sgd"``; (b) with ``solver="cg"`` (Jacobi-preconditioned CG, one streamed pass
per iteration). SGD suits (b) badly: each unit effect is seen by 2 of the 2·10⁶ rows, so
a minibatch moves a handful of the 10⁶ coordinates while every step updates all
(k + 1)·d = 9·10⁶ of them (the 2 epochs per EM step it was given took > 35 min and had
not converged); the one-hot design is nearly orthogonal after Jacobi scaling, and CG
converges in a few passes of cheap sparse products. Each fit runs in its own process, so its peak resident memory (ru_maxrss) is
its own; the goal is < 8 GiB.

Agreement with the in-memory path, all with the same 3 EM steps from the same start:
(a) on the first ``--subset`` rows of the same file (written by the same generator),
the streamed sgd fit against the in-memory sgd fit (the same computation, other
minibatches) and the in-memory exact fit (dense Cholesky E-step: what the samples
estimate); (b) on a smaller panel from the same generator (``--subset-units`` units),
streamed sgd against in-memory exact on the densified design. scikit-learn's BayesianRidge: on (a) at the largest row count it can hold
here (``--sk-rows``, timed, with peak memory); on (b) it refuses sparse input, and the
dense design would need n·d·8 bytes.

    python benchmarks/out_of_core.py [--folder /tmp/blm_ooc] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "data_scripts" / "synthetic_hdf5.py"


def generate(kind: str, path: str, **sizes) -> float:
    """Write a problem with the data script; return the seconds it took."""
    args = [sys.executable, str(SCRIPT), kind, path]
    for name, value in sizes.items():
        args += [f"--{name}", str(value)]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def worker(task: dict) -> dict:
    """One fit in this process: time, α, β and peak RSS."""
    import h5py
    import numpy as np

    import blm
    from blm import BayesianLinearRegression
    from blm.data import open_hdf5

    groups = None
    with h5py.File(task["path"], "r") as f:
        if "groups" in f:
            groups = f["groups"][()]
        n = len(f["y"])
    solver = task.get("solver", "sgd")
    options = blm.SGD(n_steps=task.get("steps", 2000), batch_size=min(task.get("batch", 512), n))
    if solver == "cg":
        options = blm.CG(tol=1e-4, max_iter=200)
    t0, steps = time.perf_counter(), None
    if task["how"] == "sklearn":
        from sklearn.linear_model import BayesianRidge

        with h5py.File(task["path"], "r") as f:
            X, y = f["X"][: task["rows"]].astype(np.float64), f["y"][: task["rows"]]
        t0 = time.perf_counter()
        ref = BayesianRidge().fit(X, y)
        alpha, beta = float(ref.lambda_), float(ref.alpha_)
    else:
        est = BayesianLinearRegression(
            solver="exact" if task["how"] == "memory-exact" else options,
            n_samples=8,
            random_state=0,
            max_iter=3,
            tol=1e-6,
            prior_groups=groups,
        )
        if task["how"] == "streamed":
            est.fit(open_hdf5(task["path"], block_size=65_536))
        else:  # in memory: the dense design read whole
            with h5py.File(task["path"], "r") as f:
                if isinstance(f["X"], h5py.Group):
                    from blm.csr import csr_block

                    X = csr_block(f["X"], 0, f["X"].attrs["shape"][0]).toarray()
                else:
                    X = f["X"][()].astype(np.float64)
                y = f["y"][()]
            t0 = time.perf_counter()
            est.fit(X, y)
        alpha, beta = np.atleast_1d(est.alpha_).tolist(), float(est.beta_)
        if hasattr(est, "diagnostics_"):
            steps = est.diagnostics_.step[-1]
    return {
        "seconds": time.perf_counter() - t0,
        "alpha": alpha,
        "beta": beta,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "last_solve_steps": steps,
    }


def run(task: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(task)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-3:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def rel(a, b) -> float:
    import numpy as np

    a, b = np.atleast_1d(a), np.atleast_1d(b)
    return float(np.max(np.abs(a / b - 1)))


def report(label: str, r: dict) -> None:
    if "error" in r:
        print(f"{label:<44} error: {r['error']}", flush=True)
        return
    alpha = ", ".join(
        f"{a:.4g}" for a in (r["alpha"] if isinstance(r["alpha"], list) else [r["alpha"]])
    )
    print(
        f"{label:<44}{r['seconds']:>9.1f} s{r['peak_mib'] / 1024:>8.2f} GiB   alpha [{alpha}]  beta {r['beta']:.4g}"
        + (
            f"  ({r['last_solve_steps']} steps in the last solve)"
            if r.get("last_solve_steps")
            else ""
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/blm_ooc")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every size (smoke runs)")
    parser.add_argument("--subset", type=int, default=100_000, help="(a) rows compared in memory")
    parser.add_argument("--subset-units", type=int, default=2_000, help="(b) units in memory")
    parser.add_argument("--sk-rows", type=int, default=400_000, help="(a) rows for scikit-learn")
    parser.add_argument("--parts", default="ab", help="which problems to run: a, b or ab")
    parser.add_argument("--worker", default=None)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    os.makedirs(args.folder, exist_ok=True)
    f = args.folder
    n, units = int(1_000_000 * args.scale), int(999_960 * args.scale)
    subset, sk_rows = int(args.subset * args.scale), int(args.sk_rows * args.scale)
    print(f"# python benchmarks/out_of_core.py --scale {args.scale} (fits in separate processes)")

    if "a" in args.parts:
        dense(args, f, n, subset, sk_rows)
    if "b" in args.parts:
        panel(args, f, units)


def dense(args, f: str, n: int, subset: int, sk_rows: int) -> None:
    print(f"\n(a) dense: n = {n} rows x d = 1000 (float32 on disk), k = 8 samples, 3 EM steps")
    big, small = f"{f}/dense.h5", f"{f}/dense_subset.h5"
    print(
        f"generate: {generate('dense', big, n=n, d=1000):.1f} s, {os.path.getsize(big) / 2**30:.2f} GiB on disk"
    )
    generate("dense", small, n=subset, d=1000)  # the same generator: the first rows of big
    streamed = run({"how": "streamed", "path": big})
    report(f"ours, streamed sgd, n = {n}", streamed)
    sub = {
        how: run({"how": how, "path": small}) for how in ("streamed", "memory-sgd", "memory-exact")
    }
    for how, r in sub.items():
        report(f"ours, {how}, first {subset} rows", r)
    if all("error" not in r for r in sub.values()):
        exact = sub["memory-exact"]
        for how in ("streamed", "memory-sgd"):
            print(
                f"  {how} vs in-memory exact on the subset: rel. diff alpha {rel(sub[how]['alpha'], exact['alpha']):.3f}, "
                f"beta {rel(sub[how]['beta'], exact['beta']):.3f}"
            )
    sk = run({"how": "sklearn", "path": big, "rows": sk_rows})
    report(f"scikit-learn BayesianRidge, first {sk_rows} rows", sk)
    print(
        f"  scikit-learn at n = {n}: the float64 design alone is {n * 1000 * 8 / 2**30:.1f} GiB, "
        "and its SVD holds several copies"
    )


def panel(args, f: str, units: int) -> None:
    print(
        f"\n(b) sparse panel: {units} units x 2 periods (n = {2 * units}), d = {units + 40}, k = 8, 3 EM steps"
    )
    big, small = f"{f}/panel.h5", f"{f}/panel_subset.h5"
    print(
        f"generate: {generate('panel', big, units=units):.1f} s, {os.path.getsize(big) / 2**30:.2f} GiB on disk"
    )
    streamed = run({"how": "streamed", "path": big, "solver": "cg"})
    report(f"ours, streamed cg, n = {2 * units}", streamed)
    generate("panel", small, units=args.subset_units)
    sub = {
        "streamed-cg": run({"how": "streamed", "path": small, "solver": "cg"}),
        "streamed-sgd": run({"how": "streamed", "path": small, "steps": 4000, "batch": 1024}),
        "memory-exact": run({"how": "memory-exact", "path": small}),
    }
    for how, r in sub.items():
        report(f"ours, {how}, panel of {args.subset_units} units", r)
    exact = sub["memory-exact"]
    for how in ("streamed-cg", "streamed-sgd"):
        if "error" not in sub[how] and "error" not in exact:
            print(
                f"  {how} vs in-memory exact: rel. diff alpha (unit, time, covariates) "
                f"{rel(sub[how]['alpha'], exact['alpha']):.3f}, beta "
                f"{rel(sub[how]['beta'], exact['beta']):.3f}"
            )
    try:
        import scipy.sparse
        from sklearn.linear_model import BayesianRidge

        BayesianRidge().fit(scipy.sparse.random(10, 5, density=0.5, format="csr"), list(range(10)))
        print("  scikit-learn accepted a sparse design")
    except (TypeError, ValueError) as err:
        print(
            f"  scikit-learn BayesianRidge on a sparse design: {type(err).__name__}: {str(err)[:120]}"
        )
    print(
        f"  densified, panel (b) would need {2 * units * (units + 40) * 8 / 2**30:,.0f} GiB in float64"
    )


if __name__ == "__main__":
    main()
