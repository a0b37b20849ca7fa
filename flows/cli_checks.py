"""The CLI's checks of its options, answered in a second: none of them imports torch, Prefect or MLflow.

The configuration checks itself (:meth:`tasks.config.PipelineConfig.check`, errors naming parameters); what is left
here is what only the command line has: a frame size to parse and the MLflow store beside a catalog root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from flows.cli_errors import store_file

if TYPE_CHECKING:
    from tasks.config import PipelineConfig


def parse_size(size: str) -> tuple[int, int]:
    """``WxH`` → (w, h); ``auto`` → (0, 300): the photos' own aspect at 300 px high."""
    if size == "auto":
        return 0, 300
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"--image-size must be auto or look like 600x300, got {size!r}") from None
    if w < 16 or h < 16:
        raise typer.BadParameter(f"--image-size must be at least 16x16, got {size!r}")
    if w > MAX_FRAME_SIDE or h > MAX_FRAME_SIDE:
        raise typer.BadParameter(f"--image-size {size!r}: each side must be at most {MAX_FRAME_SIDE} px (the backbone sees 300 px high)")
    return w, h


#: The largest shard frame side ``--image-size`` accepts: a frame is decoded for every photo, so 100000x100000 would be 10^10 pixels.
MAX_FRAME_SIDE = 4096


def check_options(
    cfg: PipelineConfig,
    *,
    protocol: str = "seen",
    only: str | None = None,
    from_stage: str | None = None,
    data: bool = True,
) -> None:
    """The configuration's own checks (``data``: its data roots too), then the MLflow store its root holds.

    Raises:
        ValueError: Naming the parameter to change (the CLI says which flag), for the first that is wrong.
    """
    cfg.check(protocol=protocol, only=only, from_stage=from_stage, data=data)
    store = store_file(cfg.root)
    if store is not None:
        from tasks.store_check import check_sqlite_store

        check_sqlite_store(store)
