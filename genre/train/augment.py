"""Augmenting training batches of log-mel windows: SpecAugment masks, mixup and a gain against the floor.

`Augment` says what to do (plain values, recorded in the results row and the checkpoint; all off by
default, as the study trained); `Augmenter` does it to one training batch on the batch's own device,
drawing every random number from generators seeded by (trial seed, rank, epoch, batch index), so the
same seed gives the same augmented batches whatever else used the global RNG. In `fit.train_epoch`:

    augmenter = Augmenter(augment, training.num_classes, seed, rank=rank)  # once per trial
    for index, batch in enumerate(batches):
        labels = batch["label"].to(device).long()
        mel, targets = augmenter(batch["mel"].to(device), labels, epoch=epoch, batch=index)
        logits = model(as_model_input(mel, device))
        loss = nn.functional.cross_entropy(logits.float(), targets)  # labels, or [B, C] probabilities
        running_accuracy.update(logits.detach().argmax(dim=1), labels)  # each window's own label

`targets` are the labels themselves unless mixup is on, then [B, C] probabilities, which
cross_entropy takes as they are. Nothing else augments: scoring and prediction (fit.score,
inference.segment_probabilities) take no augmenter, and an augmenter refuses to run where gradients
are off, as they are wherever a model is scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from data_pipeline.features import DEFAULT_TOP_DB

if TYPE_CHECKING:
    import torch

# torch is imported where batches are augmented, not at the top: the command line builds `Augment`
# and must start without torch (seconds).

_INTEGERS = ("freq_mask", "time_mask", "masks")
_AMOUNTS = ("mixup_alpha", "gain_db")


@dataclass(frozen=True)
class Augment:
    """What a trial does to its training batches; every option off (the study's training) by default."""

    freq_mask: int = 0  # the widest frequency mask, in mel bands; 0: none
    time_mask: int = 0  # the widest time mask, in frames; 0: none
    masks: int = 1  # masks of each kind per window
    mixup_alpha: float = 0.0  # mixing weights from Beta(alpha, alpha); 0: no mixup
    # Random gain, the one way it means something here: a plain gain would change nothing, as prepare
    # references every window to its own peak. Each window is heard up to gain_db dB quieter over the
    # same floor, then referenced to its peak again; so its floor rises by 0 to gain_db dB, as in a
    # noisier recording, and detail under it is lost. Louder has no such meaning (nothing under the
    # floor was kept), so the gain only ever lowers; 0: none.
    gain_db: float = 0.0

    def __post_init__(self) -> None:
        for name in _INTEGERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"augment {name} must be a whole number, 0 or more; got {value!r}")
        if self.masks < 1:
            raise ValueError(
                "augment masks must be at least 1; turn masking off with freq_mask 0 and time_mask 0"
            )
        for name in _AMOUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"augment {name} must be a number, 0 or more; got {value!r}")

    @property
    def active(self) -> bool:
        """Whether anything changes a batch."""
        return bool(self.freq_mask or self.time_mask or self.mixup_alpha or self.gain_db)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Augment:
        """Rebuild from `to_dict()` output; a record without a field had that option off."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# Sized for the study's windows: 128 mel bands by 130 frames of 23 ms (3 s). Chosen from the
# literature's proportions, not tuned on this data.
BUNDLES = {
    "study": Augment(),
    # Two masks of each kind, as PANNs (Kong et al. 2020) and SpecAugment's LD policy use.
    # 16 bands: PANNs' widest frequency stripe (8 of 64 bands) at our 128 bands, 12.5% per mask.
    # 20 frames: 0.46 s, about a beat at 120 bpm, so a mask hides a beat and never the rhythm of the
    # window; 15% of it, under the 20% of the input per time mask that SpecAugment's Switchboard
    # policies allow (p = 0.2).
    "light": Augment(freq_mask=16, time_mask=20, masks=2),
    # light's masks (so light against strong measures what mixup and gain add), and:
    # mixup alpha 0.4, the top of the 0.1-0.4 that Zhang et al. (2018) found to help on ImageNet
    # (larger underfit there): a window keeps 84% of itself on average, about half of them over 90%.
    # PANNs mixes with 1.0 (the leading window keeps 75% on average), over far longer training.
    # gain 20 dB: floors from the features' -80 dB up to -60 dB, about the dynamic range of a clean
    # analogue tape, so how clean a recording is tells less about its genre (a small collection's
    # old transfers against its modern masters), while everything within 60 dB of the peak stays.
    "strong": Augment(freq_mask=16, time_mask=20, masks=2, mixup_alpha=0.4, gain_db=20.0),
}


def bundle(name: str) -> Augment:
    """The named bundle of `BUNDLES`; an unknown name lists the known ones."""
    if name not in BUNDLES:
        raise ValueError(f"unknown augment bundle {name!r}; known: {', '.join(BUNDLES)}")
    return BUNDLES[name]


def describe(values: dict[str, Any]) -> str:
    """A trial's augmentation for its results row: "none", a bundle's name, or what is set."""
    augment = Augment.from_dict(values)
    if not augment.active:
        return "none"
    named = [name for name, known in BUNDLES.items() if known == augment]
    if named:
        return named[0]
    return ",".join(f"{k}={v:g}" for k, v in augment.to_dict().items() if v and (k != "masks" or v > 1))


class Augmenter:
    """Applies an `Augment` to training batches, on their own device, the same for the same seed.

    In order: the gain (a property of each recording), mixup, then the masks, so what a mask hides
    is gone from the mixed window too (as AST masks after mixing). Masked cells take the floor, -80 dB:
    silence on this scale, as torchaudio's default mask value 0 is silence on the power spectrograms
    its transforms make. SpecAugment masked with the mean only because its features were normalised to
    mean 0; a band held flat at a window's mean is a sound no recording makes, while floor cells are
    in every split (quiet bands, pauses), and the floor does not depend on the rest of the batch.
    """

    def __init__(
        self,
        augment: Augment,
        num_classes: int,
        seed: int,
        *,
        rank: int = 0,
        floor_db: float = -DEFAULT_TOP_DB,
    ) -> None:
        """`rank`: a data-parallel worker's, so workers draw their own masks; `floor_db`: the bottom
        of the dB scale, where prepare clips each window (top_db below its peak, at 0 dB)."""
        self.augment = augment
        self.num_classes = num_classes
        self.seed = seed
        self.rank = rank
        self.floor_db = floor_db

    def __call__(
        self, mel: torch.Tensor, labels: torch.Tensor, *, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, n_mels, frames] dB and [B] labels, on one device -> the augmented windows (same dtype
        and device) and their targets: the labels unchanged, or [B, num_classes] float32 probabilities
        with mixup. `epoch` and `batch` (its index in the epoch) pick the random draws."""
        import torch

        if not torch.is_grad_enabled():
            raise RuntimeError(
                "augmentation is for training batches only, and gradients are off here as they are "
                "when scoring or predicting; call the augmenter from the training step alone"
            )
        if mel.dim() != 3:
            raise ValueError(
                f"expected log-mel windows [batch, n_mels, frames], got shape {tuple(mel.shape)}"
            )
        augment = self.augment
        if not augment.active:
            return mel, labels
        self._check_fits(mel.shape[1:])
        draw = _Draws(self.seed, self.rank, epoch, batch)
        count, device = mel.shape[0], mel.device
        # float32 arithmetic, the input's dtype at the end: float16 steps are 0.06 dB near -80.
        out, targets = mel.float(), labels
        if augment.gain_db:
            floors = self.floor_db + draw.uniform("gain", count) * augment.gain_db
            out = torch.maximum(out, floors.to(device, non_blocking=True)[:, None, None])
        if augment.mixup_alpha:
            out, targets = self._mixup(out, labels, draw)
        if augment.freq_mask or augment.time_mask:
            out = out.masked_fill(self._masks(out, draw), self.floor_db)
        return out.to(mel.dtype), targets

    def _mixup(
        self, mel: torch.Tensor, labels: torch.Tensor, draw: _Draws
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each window mixed with a random other of the batch, in dB (as PANNs mixes its log-mels)."""
        from torch.nn import functional

        count, device = mel.shape[0], mel.device
        partner, weight = draw.mixup(count, self.augment.mixup_alpha)
        partner, weight = partner.to(device, non_blocking=True), weight.to(device, non_blocking=True)
        mixed = weight[:, None, None] * mel + (1 - weight[:, None, None]) * mel[partner]
        own = functional.one_hot(labels.long(), self.num_classes).float()
        return mixed, weight[:, None] * own + (1 - weight[:, None]) * own[partner]

    def _masks(self, mel: torch.Tensor, draw: _Draws) -> torch.Tensor:
        """[B, n_mels, frames] bool: the cells under a window's frequency or time masks."""
        import torch

        count, n_mels, frames = mel.shape
        masked = torch.zeros(mel.shape, dtype=torch.bool, device=mel.device)
        if self.augment.freq_mask:
            spans = draw.spans("freq", count, self.augment.masks, self.augment.freq_mask, n_mels)
            masked |= _covered(spans, n_mels, mel.device)[:, :, None]
        if self.augment.time_mask:
            spans = draw.spans("time", count, self.augment.masks, self.augment.time_mask, frames)
            masked |= _covered(spans, frames, mel.device)[:, None, :]
        return masked

    def _check_fits(self, shape: torch.Size) -> None:
        n_mels, frames = shape
        if self.augment.freq_mask > n_mels:
            raise ValueError(
                f"augment freq_mask {self.augment.freq_mask} is wider than the {n_mels} mel bands"
            )
        if self.augment.time_mask > frames:
            raise ValueError(f"augment time_mask {self.augment.time_mask} is longer than the {frames} frames")


class _Draws:
    """One batch's random numbers, each kind from its own generator seeded by (seed, rank, epoch, batch).

    torchaudio's FrequencyMasking and TimeMasking draw from torch's global generator (and their widths
    stop one short of mask_param), so their masks would depend on whatever else drew from it; we draw
    here instead. The draws are a few numbers per window, made on the CPU and then copied to the batch's
    device, so a seed gives the same masks, partners, weights and floors on a CPU and on any GPU. Each
    kind has its own generator: turning mixup on leaves the masks a seed gives as they were.
    """

    def __init__(self, seed: int, rank: int, epoch: int, batch: int) -> None:
        self.key = f"{seed}/{rank}/{epoch}/{batch}"

    def seed(self, kind: str) -> int:
        digest = hashlib.blake2b(f"{self.key}/{kind}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def generator(self, kind: str) -> torch.Generator:
        import torch

        return torch.Generator().manual_seed(self.seed(kind))

    def uniform(self, kind: str, count: int) -> torch.Tensor:
        import torch

        return torch.rand(count, generator=self.generator(kind))

    def spans(self, kind: str, count: int, masks: int, widest: int, length: int) -> torch.Tensor:
        """[count, masks, 2] (start, width): widths uniform on 0..widest, starts so the span fits."""
        import torch

        generator = self.generator(kind)
        width = (torch.rand(count, masks, generator=generator) * (widest + 1)).long()
        start = (torch.rand(count, masks, generator=generator) * (length - width + 1)).long()
        return torch.stack([start, width], dim=-1)

    def mixup(self, count: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Each window's partner and its own weight, folded into [0.5, 1] so its own label leads."""
        import numpy as np
        import torch

        partner = torch.randperm(count, generator=self.generator("mixup"))
        # torch.distributions.Beta takes no generator (it draws from torch's global one), and torch has
        # no other public seeded Beta or Gamma draw: numpy's, from a generator of its own kind.
        draws = np.random.default_rng(self.seed("mixup-weight")).beta(alpha, alpha, size=count)
        weight = torch.from_numpy(draws).float()
        # Beta(a, a) is symmetric: folding keeps the same mixes (i with j at w is j with i at 1 - w).
        return partner, torch.maximum(weight, 1 - weight)


def _covered(spans: torch.Tensor, length: int, device: torch.device) -> torch.Tensor:
    """[B, length] bool on `device`: the positions that any of a window's (start, width) spans covers."""
    import torch

    # non_blocking: from pageable memory CUDA stages the copy at once, without waiting for the GPU.
    spans = spans.to(device, non_blocking=True)
    positions = torch.arange(length, device=device)
    start, width = spans[..., :1], spans[..., 1:]
    return ((positions >= start) & (positions < start + width)).any(dim=1)
