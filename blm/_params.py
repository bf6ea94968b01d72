"""scikit-learn's estimator protocol for blm's regressors, without importing scikit-learn:
``get_params``/``set_params`` from the constructor's signature, the regressor tags that
``cross_val_score``, ``GridSearchCV`` and pipelines read, and a repr of the settings.
"""

from __future__ import annotations

import inspect


class RegressorParams:
    """Abstract base: the scikit-learn protocol of a regressor whose constructor
    arguments are its settings, stored under their own names (never instantiated
    itself)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor arguments as a dict (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> RegressorParams:
        """Set constructor arguments (scikit-learn protocol)."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{name!r} is not a parameter of {type(self).__name__}; valid: {valid}"
                )
            setattr(self, name, value)
        return self

    _estimator_type = "regressor"  # scikit-learn < 1.6 reads this

    def __sklearn_tags__(self):
        """scikit-learn ≥ 1.6's tags (asked only by scikit-learn, so importable then):
        a regressor for ``cross_val_score``, ``GridSearchCV`` and pipelines; dense or
        scipy sparse 2-D inputs, one or several outputs."""
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=True, multi_output=True, single_output=True),
            regressor_tags=RegressorTags(),
            input_tags=InputTags(two_d_array=True, sparse=True),
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
