"""Ray's session folders of the Ray that genre starts itself: marked as genre's, the old ones removed.

Every start of a Ray (`ray.init(address="local")`) makes a session folder in Ray's temp folder
(/tmp/ray, or RAY_TMPDIR), `session_<date>_<time>_<microseconds>_<pid>`, with the session's logs; Ray
never removes it (0.44 MB each). genre marks the sessions of its own Ray with a file, and after each
start removes its older ones, keeping the latest `KEEP_SESSIONS`. A session it did not mark (a `ray
start` cluster's, a notebook's, an older genre's) is never touched, nor one whose starting process is
alive, nor the one Ray's `session_latest` link names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.processes import pid_alive

# In a session folder: the mark of a session of genre's own Ray, holding the pid of the command.
OWN_MARK = "genre-started"
KEEP_SESSIONS = 5
SESSION_PREFIX = "session_"
LATEST_LINK = "session_latest"


@dataclass(frozen=True)
class Session:
    """One session folder in Ray's temp folder."""

    path: Path
    # The process that started it: Ray names the folder after it (its last `_` field).
    pid: int | None
    own: bool

    @classmethod
    def read(cls, path: Path) -> Session:
        pid = path.name.rsplit("_", 1)[-1]
        # os.path's tests: False, never an error, for a folder this user may not read.
        return cls(path, int(pid) if pid.isdigit() else None, os.path.isfile(path / OWN_MARK))


def current_session() -> Path:
    """This process's Ray session folder, through Ray's public runtime context (Ray must be running)."""
    import ray

    context = ray.get_runtime_context()
    return Path(context.get_temp_dir()) / context.get_session_name()


def claim_and_prune_sessions(keep: int = KEEP_SESSIONS) -> list[Path]:
    """Mark this process's session (a Ray genre just started) as genre's; remove genre's old ones.

    Returns the folders removed. Never fails the command: a folder that cannot be read or removed
    (another user's, one in use) stays.
    """
    session = current_session()
    with contextlib.suppress(OSError):
        (session / OWN_MARK).write_text(f"{os.getpid()}\n")
    return prune_sessions(session, keep)


def prune_sessions(current: Path, keep: int = KEEP_SESSIONS) -> list[Path]:
    """Remove genre's own sessions beside `current` beyond the latest `keep`; the folders removed."""
    removed = []
    for path in sessions_to_remove(list_sessions(current.parent), current, keep, pid_alive):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def list_sessions(temp_dir: Path) -> list[Session]:
    """The session folders in Ray's temp folder (not its `session_latest` link)."""
    try:
        entries = list(temp_dir.iterdir())
    except OSError:
        return []
    return [
        Session.read(entry)
        for entry in entries
        if entry.name.startswith(SESSION_PREFIX) and not os.path.islink(entry) and os.path.isdir(entry)
    ]


def sessions_to_remove(
    sessions: Iterable[Session], current: Path, keep: int, alive: Callable[[int], bool]
) -> list[Path]:
    """genre's own sessions beyond the latest `keep` (by their names: Ray's date and time), except the
    current one, the one `session_latest` names, and any whose starting process is alive."""
    own = sorted((s for s in sessions if s.own), key=lambda s: s.path.name, reverse=True)
    latest = _latest_target(current.parent)
    return [
        s.path
        for s in own[keep:]
        if s.path != current and s.path != latest and (s.pid is None or not alive(s.pid))
    ]


def _latest_target(temp_dir: Path) -> Path | None:
    link = temp_dir / LATEST_LINK
    try:
        return temp_dir / Path(os.readlink(link)).name
    except OSError:
        return None
