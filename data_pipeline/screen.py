"""Setting aside, before the split, the files whose header shows they cannot be used.

A broken file must not take a place in a split: with two good and three broken rock tracks, a split
made first could send both good ones to val and test, and train would get no rock at all.
On an object store a header costs one ranged request per file (data_pipeline.audio), so the same
screen runs there, threads waiting on the requests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from data_pipeline.audio import AudioDecodeError, probe_audio
from data_pipeline.discover import Discovery, Reject, Track
from data_pipeline.errors import UserInputError
from genre.storage import redact

# Reading headers waits on the disk (NFS, an object store), not the CPU: threads, more than cores.
PROBE_THREADS = 16


def screen(discovery: Discovery, min_seconds: float) -> Discovery:
    """The discovery with every track that fails `probe_audio` moved to `skipped`, with its reason.

    A genre all of whose files are unusable stops the run: its label would silently vanish.
    """
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        probes = list(pool.map(lambda track: _probe(track, min_seconds), discovery.tracks))
    reasons = [reason for reason, _ in probes]
    usable = [track for track, reason in zip(discovery.tracks, reasons, strict=True) if not reason]
    failed = [(track, reason) for track, reason in zip(discovery.tracks, reasons, strict=True) if reason]
    # A URI's secret key, if written into it, stays out of the rejects list and messages.
    rejected = [Reject(redact(track.path), reason) for track, reason in failed]
    lost = sorted(set(discovery.genres) - {track.genre for track in usable})
    if lost:
        first = next(
            reject for reject, (track, _) in zip(rejected, failed, strict=True) if track.genre == lost[0]
        )
        others = f"; nor of {', '.join(map(repr, lost[1:]))}" if len(lost) > 1 else ""
        raise UserInputError(
            f"no file of genre {lost[0]!r} can be used ({first.path}: {first.reason}){others}"
        )
    audio_seconds = sum(seconds for reason, seconds in probes if not reason)
    return Discovery(discovery.source, discovery.kind, usable, [*discovery.skipped, *rejected], audio_seconds)


def _probe(track: Track, min_seconds: float) -> tuple[str, float]:
    """(why the track cannot be used, or "", its header's duration in seconds)."""
    try:
        return "", probe_audio(track.path, min_seconds)
    except AudioDecodeError as error:
        return str(error), 0.0
