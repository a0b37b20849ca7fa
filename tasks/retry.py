"""When a failed task is worth retrying: flaky I/O yes, a mistake in the user's input no."""

from __future__ import annotations

from typing import Any

#: Errors that say "fix your input or run another stage first": retrying cannot help.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry anything but :data:`USER_ERRORS`, so those fail at once."""
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            state.result()
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return not isinstance(exc, USER_ERRORS)
