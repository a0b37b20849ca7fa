"""Which trained interpolation head is reported as ``worldNET``: light (no torch), so the CLI checks it at once.

Both heads are always trained (see :mod:`worldnet.models.worldnet_model`):
``in_sample`` (the paper's: the head learns on the classifier's own training
rows) and ``crossfit`` (out-of-fold classifier outputs; see docs/method.md).
"""

from __future__ import annotations

#: Heads every run trains.
HEAD_MODES = ("in_sample", "crossfit")
#: What ``--head-mode`` accepts: a trained head, or ``auto`` (per protocol, below).
REPORT_HEAD_MODES = ("auto", "in_sample", "crossfit")


def resolve_head_mode(mode: str, protocol: str) -> str:
    """The trained head reported as ``worldNET`` on ``protocol``.

    ``auto``: ``crossfit`` on the seen protocol (its folds hold out places,
    as the test does) and ``in_sample`` on unseen cities, the better head on
    each protocol of the synthetic world that ``worldnet demo`` runs. On real
    photos crossfit was the better head on unseen cells and countries too
    (docs/method.md, "Head modes"), which is why ``worldnet cv`` defaults to
    it; every report prints both heads.

    Raises:
        ValueError: For an unknown mode.
    """
    if mode not in REPORT_HEAD_MODES:
        raise ValueError(f"unknown head mode {mode!r}; choose one of {', '.join(REPORT_HEAD_MODES)}")
    if mode == "auto":
        return "crossfit" if protocol == "seen" else "in_sample"
    return mode


def other_head_mode(mode: str) -> tuple[str, str]:
    """The head mode reported beside ``mode``, and its row label."""
    other = "in_sample" if mode == "crossfit" else "crossfit"
    return other, f"worldNET ({other.replace('_', '-')})"


__all__ = ["HEAD_MODES", "REPORT_HEAD_MODES", "other_head_mode", "resolve_head_mode"]
