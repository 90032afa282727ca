"""Setting aside, before the split, the files whose header shows they cannot be used.

A broken file must not take a place in a split: with two good and three broken rock tracks, a split
made first could send both good ones to val and test, and train would get no rock at all.
On an object store a header costs one ranged request per file (data_pipeline.audio), so the same
screen runs there, threads waiting on the requests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

from data_pipeline.audio import AudioDecodeError, NotAudioError, is_audio_path, probe_audio
from data_pipeline.discover import Discovery, Reject, Track
from data_pipeline.errors import UserInputError
from data_pipeline.storage import redact

# Reading headers waits on the disk (NFS, an object store), not the CPU: threads, more than cores.
PROBE_THREADS = 16


def screen(discovery: Discovery, min_seconds: float) -> Discovery:
    """The discovery with every track that fails `probe_audio` moved to `skipped`, with its reason.

    A genre all of whose files are unusable stops the run: its label would silently vanish. A folder
    of no audio at all (notes, artwork) is no genre: its files are rejected, the run goes on.
    """
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        probes = list(pool.map(lambda track: _probe(track, min_seconds), discovery.tracks))
    reasons = [probe.reason for probe in probes]
    usable = [track for track, reason in zip(discovery.tracks, reasons, strict=True) if not reason]
    failed = [(track, reason) for track, reason in zip(discovery.tracks, reasons, strict=True) if reason]
    # A URI's secret key, if written into it, stays out of the rejects list and messages.
    rejected = [Reject(redact(track.path), reason) for track, reason in failed]
    holding_audio = {
        track.genre
        for track, probe in zip(discovery.tracks, probes, strict=True)
        if not probe.not_audio or is_audio_path(PurePosixPath(track.track_id))
    }
    lost = sorted(holding_audio - {track.genre for track in usable})
    if lost:
        first = next(
            reject for reject, (track, _) in zip(rejected, failed, strict=True) if track.genre == lost[0]
        )
        others = f"; nor of {', '.join(map(repr, lost[1:]))}" if len(lost) > 1 else ""
        raise UserInputError(
            f"no file of genre {lost[0]!r} can be used ({first.path}: {first.reason}){others}"
        )
    if not usable:  # every genre folder held notes or artwork alone
        raise UserInputError(
            f"no audio files found in {discovery.source!r}: none of its files decodes "
            f"({rejected[0].path}: {rejected[0].reason}); "
            "expected SRC/<genre>/<file> or a CSV of path,label"
        )
    audio_seconds = sum(probe.seconds for probe in probes if not probe.reason)
    return Discovery(discovery.source, discovery.kind, usable, [*discovery.skipped, *rejected], audio_seconds)


@dataclass(frozen=True)
class _Probe:
    reason: str  # why the track cannot be used, or ""
    seconds: float = 0.0  # its header's duration
    not_audio: bool = False  # empty, or a header no decoder knows


def _probe(track: Track, min_seconds: float) -> _Probe:
    try:
        return _Probe("", probe_audio(track.path, min_seconds))
    except AudioDecodeError as error:
        return _Probe(str(error), not_audio=isinstance(error, NotAudioError))
