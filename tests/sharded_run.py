"""Run by tests/test_sharding.py in a fresh process with 4 host CPU devices: fits on one
device and on four, printed as JSON for the test to compare."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import h5py  # noqa: E402
import numpy as np  # noqa: E402

import blm  # noqa: E402
from blm.sharding import put_rows  # noqa: E402
from blm.solvers.problem import Problem  # noqa: E402


def main(folder: str) -> None:
    assert len(jax.devices()) == 4
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1200, 24))
    y = X @ rng.standard_normal(24) + rng.standard_normal(1200)
    path = os.path.join(folder, "d.h5")
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    runs = {
        "sgd": (dict(solver=blm.SGD(n_steps=300, batch_size=64)), False),
        "cg-hdf5": (dict(solver=blm.CG(tol=1e-10)), True),
        "sgd-hdf5": (dict(solver=blm.SGD(n_steps=300, batch_size=64)), True),
    }
    out = {}
    for name, (options, streamed) in runs.items():
        for n_dev in (1, 4, "4-split-d"):
            if n_dev == "4-split-d" and name == "cg-hdf5":
                continue
            est = blm.BayesianLinearRegression(
                n_samples=4, random_state=0, max_iter=3, covariance_columns=[0, 5], **options
            )
            devices = jax.devices()[: 1 if n_dev == 1 else 4]
            with blm.data_parallel(devices, shard_parameters=n_dev == "4-split-d"):
                if streamed:
                    est.fit(blm.HDF5Dataset(path, block_size=400))
                else:
                    est.fit(X, y)
            out[f"{name}/{n_dev}"] = {
                "alpha": est.alpha_,
                "beta": est.beta_,
                "coef": est.coef_.tolist(),
                "samples": est.samples_.tolist(),
                "covariance": est.coef_covariance_.tolist(),
            }
    with blm.data_parallel() as mesh:
        block = put_rows((X[:400], y[:400]))
        out["block_spec"] = list(block[0].sharding.spec)
        out["block_devices"] = len(block[0].sharding.device_set)
        out["mesh"] = mesh.size
        # a row-split minibatch makes XLA sum Φᵀ(·) across devices
        sharding = blm.sharding.row_sharding()

        @jax.jit
        def grad(theta, xb, yb):
            xb, yb = blm.sharding.constrain_rows((xb, yb), sharding)
            return xb.T @ (xb @ theta - yb)

        hlo = grad.lower(np.zeros(24), *block).compile().as_text()
        out["all_reduce"] = "all-reduce" in hlo
    # with shard_parameters the iterate stays split along d through the SGD steps
    from blm.solvers.sgd import SGDConfig, sgd

    feats, data = blm.LinearFeatures(24), blm.ArrayDataset(X, y)
    prior, lik = blm.Prior.scalar(1.0, 24), blm.Gaussian(1.0)
    with blm.data_parallel(shard_parameters=True):
        post, _ = sgd(
            Problem(feats, lik, prior, data), jax.random.PRNGKey(0), 3, SGDConfig(n_steps=20)
        )
        out["samples_spec"] = [str(a) for a in post.samples.sharding.spec]
        out["samples_shard"] = list(post.samples.addressable_shards[0].data.shape)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
