"""Whether a process still runs on this machine: the one check behind every stale-marker takeover
(a staging folder, a sweep's lock, a Ray session of genre's own)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process of that pid runs on this machine (another user's counts as alive)."""
    if pid <= 0:
        return False  # 0 and negatives name process groups for os.kill, never one process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
