"""One evidence gradient: matfree's Lanczos adjoint vs backpropagation through Lanczos.

The log evidence of a random-feature regression with d = 20 000 parameters (n = 2 000
rows, float32, one Rademacher probe), its log det H by Lanczos of depth K with full
reorthogonalisation. For K ∈ {10, 50, 100, 200}, in one run:

  forward   value only (one Lanczos run: K matvecs + O(K²d) reorthogonalisation)
  adjoint   value and gradient in (log α, log β) by the adjoint (``SLQ(adjoint=True)``)
  backprop  value and gradient by reverse-mode through the iteration (``adjoint=False``)

Time: median of 3 calls after compilation. Memory: XLA's peak of temporary buffers of
the compiled computation (``memory_analysis().temp_size_in_bytes``; the data and the
outputs are arguments, not counted), beside the K × d Lanczos basis every method holds.

    python benchmarks/adjoint_vs_backprop.py [--d 20000] [--n 2000] [--depths 10 50 100 200]

Writes benchmarks/results/adjoint_vs_backprop.txt.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm import ArrayDataset, Gaussian, LinearFeatures, Prior
from blm import operators as ops
from blm.evidence.lanczos import SLQ, log_evidence_at, rademacher_probes

OUT = Path(__file__).parent / "results"


def timed(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def temp_bytes(fn, *args) -> int:
    return int(fn.lower(*args).compile().compiled.memory_analysis().temp_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--d", type=int, default=20_000)
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 50, 100, 200])
    args = parser.parse_args()
    d, n = args.d, args.n
    key = jax.random.PRNGKey(0)
    X = jax.random.normal(key, (n, d), jnp.float32) / jnp.sqrt(d)
    y = X @ jax.random.normal(jax.random.fold_in(key, 1), (d,), jnp.float32)
    feats, ds = LinearFeatures(d), ArrayDataset(X, y)
    prior, lik = Prior.scalar(1.0, d), Gaussian(10.0)
    blocks = ops.StackedBlocks.from_dataset(ds)
    probes = rademacher_probes(jax.random.fold_in(key, 2), 1, d, jnp.float32)
    mean = jnp.zeros(d, jnp.float32)  # the data-fit terms do not depend on K
    rss = ops.residual_sq(feats, ds, mean)
    log_hyper = (jnp.log(prior.alpha), jnp.log(lik.beta))
    rest = (mean, rss, feats, lik, prior, blocks, probes, n)

    def value(config):
        return eqx.filter_jit(lambda lh, *r: log_evidence_at(lh, *r, config)[0])

    def value_and_grad(config):
        return eqx.filter_jit(jax.value_and_grad(lambda lh, *r: log_evidence_at(lh, *r, config)[0]))

    rows = []
    lines = [
        f"Evidence gradient, d = {d}, n = {n}, float32, 1 probe, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s); time: median of 3 after compiling; memory: "
        "XLA peak temporaries (MiB); basis = K·d·4 bytes",
        "",
        f"{'K':>4} {'fwd s':>8} {'adj s':>8} {'bp s':>8} {'adj/fwd':>8} {'bp/adj':>8} "
        f"{'basis':>7} {'fwd mem':>8} {'adj mem':>8} {'bp mem':>9} {'adj/basis':>9} {'bp/adj mem':>10}",
    ]
    for depth in args.depths:
        fwd = value(SLQ(depth=depth, n_probes=1))
        adj = value_and_grad(SLQ(depth=depth, n_probes=1, adjoint=True))
        bp = value_and_grad(SLQ(depth=depth, n_probes=1, adjoint=False))
        mem = [temp_bytes(f, log_hyper, *rest) / 2**20 for f in (fwd, adj, bp)]
        t = [timed(f, log_hyper, *rest) for f in (fwd, adj, bp)]
        g_adj, g_bp = adj(log_hyper, *rest)[1], bp(log_hyper, *rest)[1]
        agree = max(
            float(jnp.max(jnp.abs(a - b) / jnp.abs(b)))
            for a, b in zip(
                jax.tree_util.tree_leaves(g_adj), jax.tree_util.tree_leaves(g_bp), strict=True
            )
        )
        basis = depth * d * 4 / 2**20
        rows.append((depth, *t, *mem, basis, agree))
        lines.append(
            f"{depth:>4} {t[0]:8.3f} {t[1]:8.3f} {t[2]:8.3f} {t[1] / t[0]:8.2f} {t[2] / t[1]:8.2f} "
            f"{basis:7.1f} {mem[0]:8.1f} {mem[1]:8.1f} {mem[2]:9.1f} {mem[1] / basis:9.1f} "
            f"{mem[2] / mem[1]:10.1f}   (gradients agree to {agree:.1e})"
        )
        print(lines[-1], flush=True)
    ratio = [r[5] / r[7] for r in rows]
    backward = [(r[2] - r[1]) / r[1] for r in rows]
    lines += [
        "",
        f"adjoint memory / basis: {min(ratio):.1f}–{max(ratio):.1f} over K = {rows[0][0]}…"
        f"{rows[-1][0]} (O(K·d): a constant number of K × d arrays); backprop's grows like K²·d.",
        f"adjoint backward pass / forward pass (time): {min(backward):.2f}–{max(backward):.2f}; "
        f"value and gradient / value alone: {min(r[2] / r[1] for r in rows):.2f}–"
        f"{max(r[2] / r[1] for r in rows):.2f}.",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "adjoint_vs_backprop.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))
    print(f"wrote {OUT / 'adjoint_vs_backprop.txt'}")
    np.testing.assert_array_less([r[-1] for r in rows], 1e-2)  # same gradient, both ways


if __name__ == "__main__":
    main()
