"""Linearised Laplace at a million parameters on 2 CPU cores.

    python benchmarks/million_params.py [--width 700] [--steps 100]

An MLP 64-w-w-w-10 (w = 700: 1 033 910 parameters) is trained on the digits; then
(a) the time of the posterior mean + 16 samples + 5 sample-based EM steps (each step
``--steps`` SGD steps of batch 256), with peak resident memory and the memory estimate
checked before the fit; (b) the cost of one epoch of sampling (SGD on 16 samples + mean,
batch 256) against one epoch of training the network (Adam, batch 128), measured in
the same run after compilation, and their ratio. Results go to
benchmarks/results/million_params.txt.
"""

import argparse
import os
import resource
import sys
import time

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import blm
from blm.datasets import digits_split
from blm.laplace import linearise
from blm.likelihoods import Categorical
from blm.solvers.problem import Problem
from blm.solvers.sgd import SGDConfig, sgd
from blm.training import train_map

OUT = os.path.join(os.path.dirname(__file__), "results", "million_params.txt")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mib() -> float:
    """Resident memory now (VmRSS): the baseline the fit's own arrays add to."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=700)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    Xtr, ytr, _, _ = digits_split(0)
    n = len(ytr)
    lik = Categorical(10)
    net = eqx.nn.MLP(64, 10, args.width, 3, key=jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)

    # training cost per epoch (after a compiling run of the same length)
    steps_per_epoch = int(np.ceil(n / 128))
    train_map(net, Xtr, ytr, lik, key, alpha=1.0, n_steps=steps_per_epoch)
    t0 = time.perf_counter()
    net = train_map(net, Xtr, ytr, lik, key, alpha=1.0, n_steps=5 * steps_per_epoch)
    train_epoch = (time.perf_counter() - t0) / 5

    lm = linearise(net, (Xtr, ytr), lik)
    d = lm.features.d
    estimate = lm.memory_estimate(16, 256)
    baseline = current_mib()  # runtime, data, network, training's compiled code

    # sampling cost per epoch: one SGD solve of the mean + 16 samples, timed after compiling
    prior = lm.prior(1.0)
    config = SGDConfig(
        n_steps=args.steps,
        batch_size=256,
        polyak=0.5,
        precondition=False,
        block_size=lm.block_size,
        log_every=args.steps,
    )
    sgd(Problem(lm.features, lik, prior, lm.dataset), key, 16, config)
    t0 = time.perf_counter()
    sgd(Problem(lm.features, lik, prior, lm.dataset), key, 16, config)
    solve = time.perf_counter() - t0
    sample_epoch = solve / (args.steps * 256 / n)

    t0 = time.perf_counter()
    post = lm.fit(
        n_samples=16,
        key=2,
        em_steps=5,
        tol=1e-12,
        solver=blm.SGD(n_steps=args.steps, batch_size=256),
        start=blm.Hyperparameters(alpha=1.0),
    )
    fit_s = time.perf_counter() - t0
    lines = [
        "# python benchmarks/million_params.py "
        f"--width {args.width} --steps {args.steps} (2 CPU cores, float32)",
        f"MLP 64-{args.width}-{args.width}-{args.width}-10 on digits: d = {d} parameters, n = {n}",
        f"mean + 16 samples + 5 EM steps ({args.steps} SGD steps each, batch 256): {fit_s:.1f} s; "
        f"alpha trajectory {[float(a[0]) for a in post.trajectory.alpha]} -> {float(post.alpha[0]):.4g}",
        f"peak resident memory {peak_mib():.0f} MiB, of which {peak_mib() - baseline:.0f} MiB "
        f"above the {baseline:.0f} MiB held before sampling (runtime, data, network); "
        f"estimated before the fit {estimate.total / 2**20:.0f} MiB (state "
        f"{estimate.state / 2**20:.0f}, batch {estimate.batch / 2**20:.0f})",
        f"one epoch of training (Adam, batch 128): {train_epoch:.3f} s",
        f"one epoch of sampling (mean + 16 samples, batch 256): {sample_epoch:.3f} s",
        f"ratio sampling epoch / training epoch = {sample_epoch / train_epoch:.1f} "
        f"(= {sample_epoch / train_epoch / 17:.2f} per sample)",
    ]
    text = "\n".join(lines)
    print(text)
    with open(OUT, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
