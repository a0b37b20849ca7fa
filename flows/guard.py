"""A watchdog that leaves no process behind when the CLI is killed.

Prefect's temporary API server and a Dask ``LocalCluster``'s workers are child
processes of the ``worldnet`` command. They stop when it exits, even on an
exception or Ctrl-C (their ``atexit`` hooks run), but ``kill -9`` runs no
hook: they would outlive it, holding a port and memory, forever.

:func:`start_guard` starts ``python -m flows.guard PID``, a small process
outside the command's session that notes the command's descendants every half
second. When the command is gone, it sends them SIGTERM, then SIGKILL to any
left after five seconds, and exits. After a normal exit there is nothing left
to stop, and it exits too. Linux only (it reads ``/proc``); elsewhere it is a
no-op.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5
GRACE_SECONDS = 5.0


def _start_time(pid: int) -> str | None:
    """``pid``'s start time in clock ticks (so a reused pid is never mistaken for ours), or ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, for every process this user can see."""
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid`` with its start time."""
    tree = _children()
    found: dict[int, str] = {}
    todo = list(tree.get(pid, []))
    while todo:
        p = todo.pop()
        started = _start_time(p)
        if started is not None and p not in found:
            found[p] = started
            todo.extend(tree.get(p, []))
    return found


def _alive(procs: dict[int, str]) -> dict[int, str]:
    return {p: t for p, t in procs.items() if _start_time(p) == t}


def _signal_all(procs: dict[int, str], sig: int) -> None:
    for p in _alive(procs):
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(p, sig)


def watch(pid: int) -> None:
    """Follow ``pid``'s descendants until it is gone, then stop the ones it left behind."""
    me = os.getpid()
    started = _start_time(pid)
    seen: dict[int, str] = {}
    while started is not None and _start_time(pid) == started:
        seen = {p: t for p, t in {**_alive(seen), **descendants(pid)}.items() if p != me}
        time.sleep(POLL_SECONDS)
    left = _alive(seen)
    if not left:
        return
    _signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while _alive(left) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_all(left, signal.SIGKILL)


def start_guard() -> subprocess.Popen[bytes] | None:
    """Start the watchdog for this process (see the module docstring); ``None`` where ``/proc`` is absent."""
    if not Path("/proc/self/stat").is_file() or os.environ.get("WORLDNET_NO_GUARD") == "1":
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "flows.guard", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal reaches the command, not its guard
        cwd=str(Path(__file__).resolve().parent.parent),
    )


if __name__ == "__main__":  # pragma: no cover - run as a process by start_guard
    watch(int(sys.argv[1]))
