"""The ``blm`` command (also ``python -m blm``)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

from blm.commands import add_commands
from blm.commands import parser as parser_of


def demo(args: argparse.Namespace) -> int:
    """The main job: train an MLP on scikit-learn's digits and fit its prior precision
    with it (MacKay's evidence framework: sample-based EM on the linearisation, then
    retraining at the new α, with progress bars), and print MAP against linearised
    Laplace on held-out and rotated digits; write a reliability diagram."""
    from blm.demos import COLUMNS, VERDICT, format_table, reliability_plot, run_digits

    out_dir = Path(args.out_dir)
    try:  # an existing file of that name is refused here too (FileExistsError)
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(
            f"blm demo: error: --out-dir: cannot create {str(out_dir)!r} ({err})", file=sys.stderr
        )
        return 2
    plot = out_dir / "reliability.png"
    t0 = time.perf_counter()
    print("blm demo: linearised Laplace for an MLP on scikit-learn's digits\n")
    result = run_digits(seed=args.seed, progress=sys.stderr.isatty(), with_diagonal=False)
    print(
        f"\nMLP 64-{result.width}-{result.width}-10 with d = {result.d} parameters; EM-fitted alpha = "
        f"{float(result.alpha[0]):.4g} ({result.posterior.samples.shape[0]} samples); trained at "
        f"alpha {' -> '.join(f'{a:.3g}' for a in result.alphas_trained)}"
        f"{'' if result.converged else ' (not converged)'}\n"
    )
    print(format_table(result.reports))
    (out_dir / "table.txt").write_text(format_table(result.reports) + "\n")
    reliability_plot(result, str(plot))
    print()
    for name, meaning in COLUMNS:
        print(f"  {name:<20} {meaning}")
    print(f"\n{textwrap.fill(VERDICT, 88)}\n")
    print(
        f"table and reliability diagrams (held-out, shifted): {out_dir}/; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0


def regression_demo(args: argparse.Namespace) -> int:
    """Fit the bundled CO₂ series (a random-Fourier-feature design) and diabetes data with
    evidence-tuned α, β, and print what was fitted beside scikit-learn's BayesianRidge."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import BayesianRidge

    from blm import BayesianLinearRegression
    from blm.datasets import co2_design

    X, y, t = co2_design(n_features=args.features, lengthscale=0.5)
    rows = []
    for name, (Xtr, ytr, Xte, yte) in {
        f"co2 ({X.shape[1]} features)": _split(X, y),
        "diabetes": _split(*load_diabetes(return_X_y=True)),
    }.items():
        t0 = time.perf_counter()
        est = BayesianLinearRegression(solver="exact", max_iter=1000).fit(Xtr, ytr)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = BayesianRidge(max_iter=1000, tol=1e-8).fit(Xtr, ytr)
        t_ref = time.perf_counter() - t0
        mean, std = est.predict(Xte, return_std=True)
        inside = np.mean(np.abs(yte - mean) < 1.96 * std)
        rmse = np.sqrt(np.mean((yte - mean) ** 2))
        rows.append((name, est, ref, rmse, inside, t_ours, t_ref))

    print("blm demo: evidence-tuned Bayesian linear regression (exact solver)\n")
    head = f"{'data':<22}{'alpha':>11}{'sk lambda_':>11}{'beta':>11}{'sk alpha_':>11}{'gamma':>8}"
    head += (
        f"{'log evid.':>11}{'iters':>6}{'test RMSE':>10}{'95% cover':>10}{'time s':>8}{'sk s':>7}"
    )
    print(head)
    for name, est, ref, rmse, inside, t_ours, t_ref in rows:
        print(
            f"{name:<22}{est.alpha_:>11.4g}{ref.lambda_:>11.4g}{est.beta_:>11.4g}{ref.alpha_:>11.4g}"
            f"{est.trajectory_.gamma[-1]:>8.1f}{est.scores_[-1]:>11.1f}{est.n_iter_:>6d}"
            f"{rmse:>10.3f}{inside:>10.2f}{t_ours:>8.2f}{t_ref:>7.2f}"
        )
    print(
        "\nalpha: prior precision of the weights (scikit-learn's lambda_); beta: noise precision "
        "(scikit-learn's alpha_);\ngamma: effective number of parameters; each data set is "
        "tested on a random 20% held out."
    )
    return 0


def _split(X, y):
    import numpy as np

    idx = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    return X[idx[:cut]], y[idx[:cut]], X[idx[cut:]], y[idx[cut:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blm", description=__doc__.replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    p = parser_of(sub, "demo", "linearised Laplace for an MLP on the bundled digits")
    p.add_argument("--seed", type=int, default=0, help="split, initialisation and samples")
    p.add_argument(
        "--out-dir", default="blm-demo", help="folder for the table and the reliability diagrams"
    )
    p.set_defaults(func=demo)
    p = parser_of(sub, "regression-demo", "evidence-tuned linear regression on co2 and diabetes")
    p.add_argument("--features", type=int, default=300, help="random Fourier features for co2")
    p.set_defaults(func=regression_demo)
    add_commands(sub)
    args = parser.parse_args(argv)
    keep_compiled_programs()
    return args.func(args)


CACHE_BYTES = 2**30


def keep_compiled_programs(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Keep XLA's compiled programs between runs of ``blm`` (jax's persistent compilation
    cache): a ``blm fit`` compiles some hundred programs (~8 s of a 27 s sgd fit of
    2 000 × 30 rows), which the next run with the same shapes loads instead. The folder is
    ``$XDG_CACHE_HOME/blm/jax`` (default ``~/.cache/blm/jax``), trimmed at start to half of
    ``CACHE_BYTES`` once it holds more (``trim_cache``). Where the environment sets
    ``JAX_COMPILATION_CACHE_DIR``, jax's own settings rule (empty: no cache); a folder
    that cannot be made or read means no cache. Returns the folder used, or None."""
    if "JAX_COMPILATION_CACHE_DIR" in environ:
        return None
    try:  # Path.home() raises RuntimeError where no home folder is known
        folder = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "blm" / "jax"
        folder.mkdir(parents=True, exist_ok=True)
        trim_cache(folder, CACHE_BYTES)
    except (OSError, RuntimeError):
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def trim_cache(folder: Path, max_bytes: int) -> None:
    """Once the files in ``folder`` hold more than ``max_bytes``, delete the least recently
    written until they hold at most half of it. One scan per run: jax's own size bound
    rescans the folder at every write, and without it jax takes no lock (an entry read
    while another run writes it fails to decompress, and jax compiles it instead). Runs
    trimming at once (the tests' workers) skip what another has deleted."""
    entries = []
    for entry in os.scandir(folder):
        try:
            if entry.is_file():
                stat = entry.stat()
                entries.append((stat.st_mtime, stat.st_size, entry.path))
        except FileNotFoundError:
            continue
    total = sum(size for _, size, _ in entries)
    if total <= max_bytes:
        return
    for _, size, path in sorted(entries):
        if total <= max_bytes // 2:
            break
        Path(path).unlink(missing_ok=True)
        total -= size


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
