"""The one progress bar helper: a tqdm bar when asked for, else None (library calls are
silent by default; ``blm``'s commands ask only when stderr is a terminal)."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "step"):
    """A ``tqdm.auto`` bar of ``total`` ``unit``s labelled ``desc``, or None if not
    ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)


def advance(bar, to: int, **postfix) -> None:
    """Move ``bar`` to position ``to`` (a resumed fit's first step jumps there) and show
    ``postfix``."""
    bar.update(max(to - bar.n, 0))
    if postfix:
        bar.set_postfix(**postfix)


def close(bar) -> None:
    """Close ``bar`` if there is one; a loop that stopped before its cap (converged) ends
    its bar at the steps it took, shown as complete."""
    if bar is None:
        return
    if bar.total is not None and bar.n < bar.total:
        bar.total = bar.n
        bar.refresh()
    bar.close()


class StepBar:
    """A bar over a hyperparameter loop's steps, as ``FitSettings.progress``: called with
    (step, change) after each step; a resumed fit starts at its resumed step."""

    def __init__(self, enabled: bool, total: int, desc: str):
        self.bar = progress_bar(enabled, total, desc)

    def __call__(self, step: int, change: float) -> None:
        if self.bar is not None:
            advance(self.bar, step, change=f"{change:.2e}")

    @property
    def callback(self):
        """This bar as a loop's ``progress`` callback, or None when it is off."""
        return None if self.bar is None else self

    def close(self) -> None:
        close(self.bar)

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
