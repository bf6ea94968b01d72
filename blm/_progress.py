"""The one progress bar helper: a tqdm bar when asked for, else None (library calls are
silent by default)."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "step"):
    """A ``tqdm.auto`` bar of ``total`` ``unit``s labelled ``desc``, or None if not
    ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)


def close(bar) -> None:
    """Close ``bar`` if there is one."""
    if bar is not None:
        bar.close()
