"""One full pass ΦᵀBΦZ over an in-memory design: ours against NumPy's BLAS, in one run.

A pass with k vectors is two matrix products over the n × p design X (float32,
generated, seeded): U = X Zᵀ (n, k), then (BU)ᵀX (k, p), B = β = 4 here. Every solver
pays it (cg per iteration, sgd per snapshot, the targets' noise pass), so its cost is
the unit the solver benchmarks count in. Timed, each ``--repeat`` times in turn (the
first call of each compiles or warms up), medians:

* ours: ``operators.normal_matvec`` with ``LinearFeatures`` (its ``linearize_many``:
  the two products as plain 2-D matrix products, rows first);
* generic: the same pass through ``Features.linearize_many``, the one-vector pair
  vmapped over the k vectors (what every feature map without batched products of its
  own gets; ``LinearFeatures`` vmapped its pair, in a sample-first layout, until
  2026-11-30);
* numpy: ``(4 (X @ Zᵀ)).T @ X`` on a NumPy copy of the design (its BLAS, the floor for
  these two products on this machine).

    python benchmarks/full_pass.py [--n 100000] [--p 10000] [--k 17] [--repeat 5]

Prints the times and the ratios generic/ours and ours/numpy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from blm import ArrayDataset, Gaussian, LinearFeatures
from blm import operators as ops
from blm.features import Features


class VmappedLinearFeatures(LinearFeatures):
    """``LinearFeatures`` with the generic k-vector products (vmapped one-vector pair)."""

    linearize_many = Features.linearize_many


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=17)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    X = jax.random.normal(k1, (args.n, args.p), jnp.float32)
    Z = jax.random.normal(k2, (args.k, args.p), jnp.float32)
    ds, lik = ArrayDataset(X, jnp.zeros(args.n, jnp.float32)), Gaussian(4.0)
    X_np, Z_np = np.asarray(X), np.asarray(Z)
    runs = {
        "ours": lambda: jax.block_until_ready(
            ops.normal_matvec(LinearFeatures(args.p), lik, ds, Z)
        ),
        "generic": lambda: jax.block_until_ready(
            ops.normal_matvec(VmappedLinearFeatures(args.p), lik, ds, Z)
        ),
        "numpy": lambda: (4.0 * (X_np @ Z_np.T)).T @ X_np,
    }
    ref = runs["numpy"]()
    for name, run in runs.items():
        err = float(np.max(np.abs(np.asarray(run()) - ref)) / np.max(np.abs(ref)))
        print(f"{name}: max relative difference to numpy {err:.1e}")
    times = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"n={args.n} p={args.p} k={args.k} float32, medians of {args.repeat}: "
        + "; ".join(
            f"{name} {t:.3f} s ({min(times[name]):.3f}-{max(times[name]):.3f})"
            for name, t in med.items()
        )
    )
    print(
        f"generic/ours = {med['generic'] / med['ours']:.2f}, "
        f"ours/numpy = {med['ours'] / med['numpy']:.2f}"
    )


if __name__ == "__main__":
    main()
