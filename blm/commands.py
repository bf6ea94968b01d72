"""``blm fit``, ``predict``, ``coef`` and ``info``: regression on HDF5 files from the shell.

    blm fit DATA.h5 --x X --y y [--groups G [--fixed-alpha GROUP=ALPHA ...]] [--weights W]
            --solver auto|exact|cg|sgd --samples K
            --hyper mackay|evidence --out POSTERIOR.h5 [--solver-tol EPS]
            [--fixed-solver-tol] [--snapshot-every S] [--covariance-columns I,J]
            [--checkpoint C] [--resume] [--float64]
    blm predict POSTERIOR.h5 DATA.h5 --x X --out PREDICTIONS.h5
    blm coef POSTERIOR.h5 [--rows N] [--sort signal|abs|column] [--out COEFFICIENTS.h5]
    blm info POSTERIOR.h5

``fit`` streams DATA.h5 in row blocks (``HDF5Dataset``), writes the hyperparameter
loop's state to a checkpoint (default ``OUT.ckpt``) every ``--checkpoint-every``
seconds and on Ctrl-C (exit status 130); ``--resume`` continues from it. Outputs are
written under a temporary name and renamed, so a killed run never leaves a truncated
file in place of a good one; the checkpoint is removed once the output is written.
Bad input (a missing, truncated or non-HDF5 file, a missing dataset, mismatched shapes)
exits with status 2 and a message naming the option. No command overwrites data: an
``--out`` that is one of its inputs is refused, an existing ``--out`` needs ``--force``,
and the output's folder is checked before any work. Progress bars are drawn only when
stderr is a terminal (``--progress``/``--no-progress`` to choose). ``fit`` computes in JAX's default float32 unless ``--float64``
(``jax_enable_x64``: twice the memory, the exact solver then agrees with scikit-learn
to float64 precision); ``predict``, ``coef`` and ``info`` compute in the precision the
posterior was fitted in.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import numpy as np

from blm.commands_classifier import LIKELIHOODS, stopping
from blm.estimator_defaults import CLASSIFIER_DEFAULTS
from blm.estimator_defaults import ESTIMATOR_DEFAULTS as DEFAULTS
from blm.h5io import check_writable, open_h5

INTERRUPTED = 130
BAD_INPUT = 2


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except None (an option whose help says what
    its absence means, e.g. a default that depends on --likelihood)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows every option's default."""
    return sub.add_parser(name, help=help, formatter_class=_DefaultsShown)


def _add_out(p, required: bool, help: str) -> None:
    p.add_argument("--out", required=required, default=None, help=help)
    p.add_argument(
        "--force", action="store_true", help="replace --out if it exists (never an input)"
    )


def add_commands(sub) -> None:
    """Register fit, predict, coef and info on an argparse subparsers object."""
    from blm.commands_posterior import coef, info, predict  # they import this module

    p = parser(sub, "fit", "fit a Bayesian linear (or logistic) regression to an HDF5 file")
    p.add_argument("data", help="HDF5 file with inputs and targets")
    p.add_argument("--x", default="X", help="dataset of inputs, shape (n, p)")
    p.add_argument("--y", default="y", help="dataset of targets, shape (n,) or (n, m)")
    p.add_argument("--groups", default=None, help="dataset of p integer prior groups")
    p.add_argument(
        "--fixed-alpha",
        action="append",
        default=None,
        metavar="GROUP=ALPHA",
        help="give a prior group's precision instead of fitting it (repeatable; GROUP by "
        "name where --groups has names, else its number); 0 leaves the group unpenalised "
        "(a flat prior: fixed effects beside the fitted random effects, fitted by REML)",
    )
    p.add_argument(
        "--weights", default=None, help="dataset of n frequency weights >= 0 (sample_weight)"
    )
    p.add_argument(
        "--covariance-columns",
        default=None,
        help="comma-separated column indices, e.g. 0,3: their joint posterior covariance, "
        "solved exactly (blm coef writes it)",
    )
    p.add_argument(
        "--solver",
        choices=("auto", "exact", "cg", "sgd"),
        default=DEFAULTS["solver"],
        help="auto: exact where the dense model is cheap, else sgd (the rows come from a file)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=DEFAULTS["n_samples"],
        help="posterior samples k (default 16 for sgd/cg, none for exact)",
    )
    p.add_argument("--hyper", choices=("mackay", "evidence"), default=DEFAULTS["hyper"])
    p.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        default="gaussian",
        help="gaussian: Bayesian linear regression on numbers in --y; bernoulli (two "
        "classes) or categorical (two or more): Bayesian logistic regression on the class "
        "labels in --y (numbers or strings)",
    )
    _add_out(p, True, "posterior file to write")
    p.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help=f"hyperparameter steps at most (default {DEFAULTS['max_iter']}; classifiers "
        f"{CLASSIFIER_DEFAULTS['max_iter']})",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help=f"relative change to stop at (default {DEFAULTS['tol']:g}; classifiers "
        f"{CLASSIFIER_DEFAULTS['tol']:g})",
    )
    p.add_argument(
        "--evidence-tol",
        type=float,
        default=None,
        help="or the evidence's predicted further gain (nats) to stop at; 0: --tol alone "
        f"(default {DEFAULTS['evidence_tol']:g})",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="sgd steps per solve (at most; default 2000)"
    )
    p.add_argument(
        "--solver-tol",
        type=float,
        default=None,
        help="solve the posteriors to this relative residual, early EM steps loosely (cg: "
        "default 1e-6; sgd: adds SVRG snapshots and stops at the first within it, --steps "
        "the cap)",
    )
    p.add_argument(
        "--fixed-solver-tol",
        action="store_true",
        help="solve every EM step to the solver tolerance (default: early steps loosely)",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=None,
        help="sgd steps between SVRG snapshots (default half an epoch with --solver-tol)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="sgd rows per step (default min(256, n))"
    )
    p.add_argument("--block-size", type=int, default=65_536, help="rows read at a time")
    p.add_argument("--seed", type=int, default=0, help="samples and minibatches")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default OUT.ckpt)")
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only when stderr is a terminal)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (= --no-progress)")
    p.add_argument(
        "--float64",
        action="store_true",
        help="compute in float64 (jax_enable_x64; default float32): twice the memory",
    )
    p.set_defaults(func=fit)
    p = parser(sub, "predict", "predictive mean and sd for the rows of an HDF5 file")
    p.add_argument("posterior", help="file written by blm fit")
    p.add_argument("data", help="HDF5 file with inputs")
    p.add_argument("--x", default="X", help="dataset of inputs, shape (n, p)")
    _add_out(
        p,
        True,
        "file to write: datasets mean and std (a classifier: proba (n, K), label, classes)",
    )
    p.add_argument("--block-size", type=int, default=65_536, help="rows read at a time")
    p.set_defaults(func=predict)
    p = parser(sub, "coef", "print (and write) the posterior mean and sd of every weight")
    p.add_argument("posterior", help="file written by blm fit")
    p.add_argument("--rows", type=int, default=None, help="print at most this many rows (all)")
    p.add_argument(
        "--sort",
        choices=("signal", "abs", "column"),
        default="signal",
        help="row order: largest |mean|/sd, largest |mean|, or column order",
    )
    _add_out(
        p,
        False,
        "also write a file: datasets coef, std, intercept (names: the data's column names; "
        "covariance, covariance_columns: if fitted with --covariance-columns)",
    )
    p.set_defaults(func=coef)
    p = parser(sub, "info", "what a posterior file holds")
    p.add_argument("posterior", help="file written by blm fit")
    p.set_defaults(func=info)


def check_out(out: str, inputs: list[str], force: bool) -> None:
    """Refuse an ``--out`` that would destroy data: one of the command's inputs (always),
    an existing file (unless ``force``), or a file in a missing or read-only folder;
    checked before any work is done.

    Raises:
        ValueError, FileNotFoundError, PermissionError, IsADirectoryError: naming --out.
    """
    for path in inputs:
        if path and os.path.exists(path) and os.path.exists(out) and os.path.samefile(out, path):
            raise ValueError(
                f"--out: {out!r} is an input of this command ({path!r}); writing it would "
                "replace that input: choose another file"
            )
    if os.path.exists(out) and not force:
        raise ValueError(f"--out: {out!r} exists; pass --force to replace it")
    check_writable(out, "--out")


def _converged_text(est) -> str:
    """ "converged", or "NOT converged (last change …)" for a fit that stopped at a cap."""
    if est.converged_:
        return "converged"
    return f"NOT converged (last relative change {est.last_change_:.2e}; raise --max-iter)"


def _report():
    """``blm.estimator_report`` (imported when needed: it loads JAX)."""
    from blm import estimator_report

    return estimator_report


def _fail(command: str, err: Exception) -> int:
    print(f"blm {command}: error: {err}", file=sys.stderr)
    return BAD_INPUT


def _enable_float64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def fit(args: argparse.Namespace) -> int:
    """Fit α, β and the posterior to DATA.h5 and write POSTERIOR.h5."""
    if args.float64:
        _enable_float64()
    from blm import commands_classifier as classify
    from blm.data import open_hdf5

    checkpoint = args.checkpoint or args.out + ".ckpt"
    try:
        check_out(args.out, [args.data, checkpoint], args.force)
        if args.checkpoint is not None:
            check_out(checkpoint, [args.data, args.out], True)
    except (OSError, ValueError) as err:
        return _fail("fit", err)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    # Ctrl-C must reach the fit as KeyboardInterrupt even when this process inherited
    # SIGINT as ignored (a background job of a non-interactive shell): Python then
    # leaves it ignored, and the checkpoint-on-interrupt promise would silently fail
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        dataset = open_hdf5(args.data, x=args.x, y=args.y, block_size=args.block_size)
        groups = _group_labels(_read_dataset(args.data, args.groups, "--groups"), args)
        fixed_alpha = _fixed_alpha(args.fixed_alpha, groups)
        weights = _read_dataset(args.data, args.weights, "--weights")
        common = {
            "solver": _solver(args, dataset.n),
            "n_samples": args.samples,
            "random_state": args.seed,
            "prior_groups": groups,
            "fixed_alpha": fixed_alpha,
        }
        if args.likelihood != "gaussian":
            classify.check_classes(dataset.targets(), args.likelihood)
            est = classify.classifier(args, common)
            est.fit(dataset, sample_weight=weights)
        else:
            est = _regression(args, common, progress)
            est.fit(
                dataset,
                sample_weight=weights,
                checkpoint=checkpoint,
                resume=args.resume,
                checkpoint_every=args.checkpoint_every,
            )
    except KeyboardInterrupt:
        if args.likelihood != "gaussian":
            print("\nblm fit: interrupted (a classifier fit keeps no checkpoint)", file=sys.stderr)
            return INTERRUPTED
        print(
            f"\nblm fit: interrupted; state written to {checkpoint!r}; continue with the same "
            "command and --resume",
            file=sys.stderr,
        )
        return INTERRUPTED
    except (OSError, ValueError, TypeError, MemoryError) as err:
        return _fail("fit", err)
    est.save(args.out)
    if args.likelihood != "gaussian":
        print(classify.fitted_text(est, args.out))
        return 0
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    print(
        f"blm fit: alpha = {_report().alpha_text(est)}, beta = {np.round(est.beta_, 6)} after "
        f"{est.n_iter_} steps ({_converged_text(est)}); posterior written to {args.out}"
    )
    return 0


def _regression(args: argparse.Namespace, common: dict, progress: bool):
    """The ``BayesianLinearRegression`` the flags describe (``common``: the settings
    both estimators take)."""
    from blm import BayesianLinearRegression

    return BayesianLinearRegression(
        **common,
        hyper=args.hyper,
        progress=progress and not args.quiet,
        covariance_columns=_columns(args.covariance_columns),
        **stopping(args, DEFAULTS),
    )


def _columns(text: str | None) -> list[int] | None:
    """``--covariance-columns``: "0,3,7" → [0, 3, 7]."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as err:
        raise ValueError(
            f"--covariance-columns must be comma-separated column indices such as 0,3, got {text!r}"
        ) from err


def _fixed_alpha(texts: list[str] | None, groups: np.ndarray | None) -> dict | None:
    """``--fixed-alpha unit=0 --fixed-alpha x=2.5`` → {"unit": 0.0, "x": 2.5}, a group's
    label as ``groups`` holds it: a name, or an integer where the groups are numbers."""
    if not texts:
        return None
    if groups is None:
        raise ValueError("--fixed-alpha: needs --groups (it names a prior group)")
    fixed: dict = {}
    for text in texts:
        label, sep, value = text.rpartition("=")
        try:
            alpha = float(value)
            if not (sep and label):
                raise ValueError
            key = int(label) if np.issubdtype(groups.dtype, np.integer) else label
        except ValueError as err:
            raise ValueError(
                f"--fixed-alpha must be GROUP=ALPHA, e.g. covariates=0 (GROUP a number where "
                f"--groups has no names), got {text!r}"
            ) from err
        fixed[key] = alpha
    return fixed


def _read_dataset(path: str, name: str | None, flag: str) -> np.ndarray | None:
    """The whole dataset ``name`` of the HDF5 file (p groups or n weights: a vector), or
    None without a name."""

    if name is None:
        return None
    with open_h5(path, "data") as f:
        if name not in f:
            raise ValueError(f"{flag}: no dataset named {name!r} in {path!r}")
        return f[name][()]


def _group_labels(groups: np.ndarray | None, args: argparse.Namespace) -> np.ndarray | None:
    """Integer prior groups as their names where the dataset has a ``names`` attribute
    (group g is names[g], as ``data_scripts`` write them), else as stored."""
    import h5py

    if groups is None:
        return None
    with h5py.File(args.data, "r") as f:
        names = f[args.groups].attrs.get("names")
    if names is None:
        return groups
    names = np.asarray([n.decode() if isinstance(n, bytes) else str(n) for n in names])
    if (
        not np.issubdtype(groups.dtype, np.integer)
        or groups.min() < 0
        or groups.max() >= len(names)
    ):
        raise ValueError(
            f"--groups: {args.groups!r} must number its {len(names)} names from 0, got values "
            f"in [{groups.min()}, {groups.max()}]"
        )
    return names[groups]


def _solver(args: argparse.Namespace, n: int):
    """The estimator's solver from the solver flags: its name where they leave its
    defaults, else the object they configure.

    ``--solver-tol`` ε solves the posteriors (mean and samples) until
    ‖r_j − Hx_j‖/‖r_j‖ ≤ ε for every column (early EM steps to a looser tolerance, see
    ``SolveSchedule``, unless ``--fixed-solver-tol``): cg's own criterion (default 1e-6),
    and for sgd SVRG (snapshots every ``--snapshot-every`` steps, default half an epoch
    ⌈n/(2·batch)⌉, momentum 0.5), which checks it exactly at each snapshot; ``--steps``
    then caps each solve. Without it sgd runs ``--steps`` plain minibatch steps."""
    from blm.solvers.config import CG, SGD, SVRG

    tol, every = args.solver_tol, args.snapshot_every
    if args.solver == "auto":
        flags = {
            "--solver-tol": tol,
            "--snapshot-every": every,
            "--steps": args.steps,
            "--batch-size": args.batch_size,
            "--fixed-solver-tol": args.fixed_solver_tol or None,
        }
        for flag, value in flags.items():
            if value is not None:
                raise ValueError(
                    f"{flag} configures a sampled solver: name it (--solver cg or --solver sgd) "
                    "rather than --solver auto"
                )
        return "auto"
    if args.solver != "sgd":
        for flag, value in (("--snapshot-every", every), ("--steps", args.steps)):
            if value is not None:
                raise ValueError(f"{flag} applies to --solver sgd, not {args.solver}")
        if args.batch_size is not None:
            raise ValueError(f"--batch-size applies to --solver sgd, not {args.solver}")
    if args.solver == "exact" and args.samples is not None:
        raise ValueError("--samples applies to --solver sgd or cg (exact keeps no samples)")
    if tol is not None and args.solver == "exact":
        raise ValueError("--solver-tol applies to --solver sgd or cg (exact solves directly)")
    if tol is not None and not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"--solver-tol must be a positive number, got {tol}")
    if every is not None and every < 1:
        raise ValueError(f"--snapshot-every must be a positive number of steps, got {every}")
    if args.fixed_solver_tol and (args.solver == "exact" or (args.solver == "sgd" and tol is None)):
        raise ValueError(
            "--fixed-solver-tol applies where a solve has a tolerance: --solver cg, or sgd with "
            "--solver-tol"
        )
    adaptive = None if not args.fixed_solver_tol else False
    if args.solver == "exact":
        return "exact"
    if args.solver == "cg":
        cg = CG(tol=tol, adaptive_tol=adaptive)
        return "cg" if cg == CG() else cg  # by name where the flags leave the defaults
    batch = None if args.batch_size is None else min(args.batch_size, n)
    svrg = None
    if tol is not None or every is not None:  # the interval written out, for blm info
        every = every or max(1, -(-n // (2 * (batch or min(256, n)))))
        svrg = SVRG(snapshot_every=every)
    return SGD(
        n_steps=args.steps,
        batch_size=batch,
        block_size=args.block_size,
        svrg=svrg,
        tol=tol,
        adaptive_tol=adaptive,
    )  # by object: the file's read size is the CLI's own setting
