"""Augmenting training batches: masks, mixup and the gain against the floor, seeded and on any device."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from genre.train import augment as augment_module
from genre.train.augment import BUNDLES, Augment, Augmenter, bundle

CLASSES, MELS, FRAMES, FLOOR = 10, 128, 130, -80.0


def windows(count: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Peak-referenced dB windows, none of them at the floor: a cell at -80 was set by a mask."""
    generator = torch.Generator().manual_seed(seed)
    mel = -79 * torch.rand(count, MELS, FRAMES, generator=generator)
    mel[:, 0, 0] = 0.0
    return mel.to(dtype)


def labels(count: int = 32) -> torch.Tensor:
    return torch.arange(count) % CLASSES


def augmented(augment: Augment, mel: torch.Tensor, seed: int = 0, epoch: int = 0, batch: int = 0, **kw):
    return Augmenter(augment, CLASSES, seed, **kw)(mel, labels(len(mel)), epoch=epoch, batch=batch)


def runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    lengths, current = [], 0
    for flag in [*flags.tolist(), False]:
        if flag:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths


def test_the_study_bundle_returns_the_batch_itself():
    mel, y = windows(), labels()
    out, targets = Augmenter(BUNDLES["study"], CLASSES, seed=0)(mel, y, epoch=3, batch=5)
    assert out is mel and targets is y


def test_frequency_masks_set_whole_bands_to_the_floor_and_nothing_else():
    mel = windows()
    out, _ = augmented(Augment(freq_mask=16), mel)
    changed = out != mel
    bands = (out == FLOOR).all(dim=2)  # [B, n_mels]
    assert torch.equal(changed, bands[:, :, None].expand_as(changed))
    for sample in bands:
        assert len(runs(sample)) <= 1 and sum(runs(sample)) <= 16


def test_time_masks_set_whole_frames_to_the_floor_and_nothing_else():
    mel = windows()
    out, _ = augmented(Augment(time_mask=20), mel)
    changed = out != mel
    frames = (out == FLOOR).all(dim=1)  # [B, frames]
    assert torch.equal(changed, frames[:, None, :].expand_as(changed))
    for sample in frames:
        assert len(runs(sample)) <= 1 and sum(runs(sample)) <= 20


def test_a_window_gets_at_most_masks_of_each_kind_each_at_most_the_widest():
    mel = windows(64)
    out, _ = augmented(Augment(freq_mask=6, time_mask=5, masks=3), mel)
    bands, frames = (out == FLOOR).all(dim=2), (out == FLOOR).all(dim=1)
    assert torch.equal(out != mel, bands[:, :, None] | frames[:, None, :])
    for sample_bands, sample_frames in zip(bands, frames, strict=True):
        # Overlapping or touching masks merge into one run: count and total width bound them.
        assert len(runs(sample_bands)) <= 3 and sum(runs(sample_bands)) <= 3 * 6
        assert len(runs(sample_frames)) <= 3 and sum(runs(sample_frames)) <= 3 * 5


def test_mask_widths_run_from_none_to_the_widest():
    out, _ = augmented(Augment(freq_mask=4), windows(400))
    widths = (out == FLOOR).all(dim=2).sum(dim=1)
    assert set(widths.tolist()) == {0, 1, 2, 3, 4}


def test_each_window_gets_its_own_masks():
    same = windows(1).expand(16, MELS, FRAMES)
    out, _ = augmented(BUNDLES["light"], same)
    bands, frames = (out == FLOOR).all(dim=2), (out == FLOOR).all(dim=1)
    assert len({tuple(sample.tolist()) for sample in bands}) > 1
    assert len({tuple(sample.tolist()) for sample in frames}) > 1


def test_a_windows_frequency_and_time_masks_are_drawn_apart():
    out, _ = augmented(Augment(freq_mask=10, time_mask=10), windows(64))
    band_widths, frame_widths = (out == FLOOR).all(dim=2).sum(dim=1), (out == FLOOR).all(dim=1).sum(dim=1)
    assert not torch.equal(band_widths, frame_widths)


def test_the_same_seed_epoch_and_batch_give_the_same_batch():
    mel, strong = windows(), BUNDLES["strong"]
    first = augmented(strong, mel, seed=7, epoch=2, batch=3)
    torch.manual_seed(123)  # the global generator plays no part
    second = augmented(strong, mel, seed=7, epoch=2, batch=3)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("other", [{"seed": 8}, {"epoch": 3}, {"batch": 4}, {"rank": 1}])
def test_another_seed_epoch_batch_or_rank_gives_another_batch(other):
    mel, strong = windows(), BUNDLES["strong"]
    where = {"seed": 7, "epoch": 2, "batch": 3}
    assert not torch.equal(
        augmented(strong, mel, **where)[0], augmented(strong, mel, **{**where, **other})[0]
    )


def test_augmenting_leaves_the_global_generator_as_it_was():
    state = torch.get_rng_state()
    augmented(BUNDLES["strong"], windows())
    assert torch.equal(torch.get_rng_state(), state)


def test_turning_mixup_on_leaves_the_masks_a_seed_gives():
    mel = windows()
    masks_only, _ = augmented(Augment(freq_mask=16, time_mask=20, masks=2), mel)
    with_mixup, _ = augmented(Augment(freq_mask=16, time_mask=20, masks=2, mixup_alpha=0.4), mel)
    assert torch.equal(masks_only == FLOOR, with_mixup == FLOOR)


def test_mixup_targets_are_the_mixes_of_the_labels_and_sum_to_one():
    mel, y = windows(CLASSES), torch.arange(CLASSES)  # one window per class: a target names its partner
    _, targets = Augmenter(Augment(mixup_alpha=0.4), CLASSES, seed=0)(mel, y, epoch=0, batch=0)
    assert targets.shape == (CLASSES, CLASSES) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(dim=1), torch.ones(CLASSES))
    assert (targets >= 0).all() and (targets.count_nonzero(dim=1) <= 2).all()
    assert (targets[y, y] >= 0.5).all()  # each window's own label leads
    assert torch.equal(targets.argmax(dim=1), y)


def test_mixup_mixes_the_windows_with_the_weights_of_their_targets():
    mel, y = windows(CLASSES), torch.arange(CLASSES)
    out, targets = Augmenter(Augment(mixup_alpha=1.0), CLASSES, seed=0)(mel, y, epoch=0, batch=0)
    mixed = 0
    for index in range(CLASSES):
        own = targets[index, index]
        partner = int(targets[index].clone().index_fill_(0, torch.tensor(index), -1).argmax())
        expected = own * mel[index] + (1 - own) * mel[partner] if own < 1 else mel[index]
        assert torch.allclose(out[index], expected, atol=1e-4)
        mixed += int(own < 1)
    assert mixed > CLASSES // 2


@pytest.mark.parametrize(("alpha", "kept"), [(0.4, 0.84), (1.0, 0.75)])
def test_mixup_weights_are_beta_alpha_alpha_folded_so_each_window_leads(alpha, kept):
    # A window keeps E[max(w, 1 - w)] of itself, w ~ Beta(alpha, alpha): 84% at 0.4, 75% at 1.0.
    count = 4096
    mel, y = windows(count)[:, :2, :2], torch.arange(count) % CLASSES
    _, targets = Augmenter(Augment(mixup_alpha=alpha), CLASSES, seed=0)(mel, y, epoch=0, batch=0)
    own = targets[torch.arange(count), y]  # a partner of the same class adds to it: at least the weight
    assert (own >= 0.5).all() and own.mean() == pytest.approx(kept, abs=0.02)


def test_augmenting_uses_no_private_torch_api():
    tree = ast.parse(Path(augment_module.__file__).read_text())
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        and ast.unparse(node.value).split(".")[0] == "torch"
    ]  # fmt: skip
    assert private == []


def test_cross_entropy_takes_the_mixed_targets_as_they_are():
    mel, y = windows(CLASSES), torch.arange(CLASSES)
    _, targets = Augmenter(Augment(mixup_alpha=0.4), CLASSES, seed=0)(mel, y, epoch=0, batch=0)
    logits = torch.randn(CLASSES, CLASSES)
    expected = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert torch.allclose(functional.cross_entropy(logits, targets), expected)


def test_without_mixup_the_targets_are_the_labels_themselves():
    y = labels()
    _, targets = Augmenter(BUNDLES["light"], CLASSES, seed=0)(windows(), y, epoch=0, batch=0)
    assert targets is y


def test_the_gain_raises_each_windows_floor_by_at_most_gain_db_and_keeps_the_rest():
    mel = windows(64)
    out, _ = augmented(Augment(gain_db=20.0), mel)
    assert (out >= mel).all() and (out.amax(dim=(1, 2)) == 0).all()
    floors = out.amin(dim=(1, 2))
    assert (floors > FLOOR).all() and (floors <= FLOOR + 20).all()
    assert torch.equal(out, torch.maximum(mel, floors[:, None, None]))  # only cells under the floor move
    assert (out != mel).any()
    assert floors.unique().numel() > 1  # each window its own


def test_the_gain_changes_no_window_whose_range_is_within_its_floor():
    shallow = -40 * torch.rand(8, MELS, FRAMES)  # 40 dB of range: above any floor up to -60 dB
    out, _ = augmented(Augment(gain_db=20.0), shallow)
    assert torch.equal(out, shallow)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_the_batch_keeps_its_dtype_and_device_and_the_input_is_untouched(dtype):
    mel = windows(dtype=dtype)
    before = mel.clone()
    out, targets = augmented(BUNDLES["strong"], mel)
    assert out.dtype == dtype and out.device == mel.device and out.shape == mel.shape
    assert targets.device == mel.device
    assert torch.equal(mel, before)
    assert (out <= 0).all() and (out >= FLOOR).all()


def test_float16_and_float32_windows_get_the_same_masks():
    mel = windows().half()
    half, _ = augmented(BUNDLES["light"], mel)
    single, _ = augmented(BUNDLES["light"], mel.float())
    assert torch.equal(half.float(), single)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_batch_is_augmented_on_the_gpu_as_on_the_cpu():
    mel = windows()
    cpu, cpu_targets = augmented(BUNDLES["strong"], mel)
    gpu, gpu_targets = Augmenter(BUNDLES["strong"], CLASSES, 0)(mel.cuda(), labels().cuda(), epoch=0, batch=0)
    assert gpu.device.type == "cuda" and gpu_targets.device.type == "cuda"
    assert torch.equal(gpu.cpu() == FLOOR, cpu == FLOOR)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4) and torch.allclose(gpu_targets.cpu(), cpu_targets)


def test_augmenting_is_refused_where_gradients_are_off_as_when_scoring():
    augmenter = Augmenter(BUNDLES["study"], CLASSES, seed=0)
    with torch.no_grad(), pytest.raises(RuntimeError, match="for training batches only"):
        augmenter(windows(), labels(), epoch=0, batch=0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="for training batches only"):
        augmenter(windows(), labels(), epoch=0, batch=0)


def test_a_mask_wider_than_the_window_is_refused():
    with pytest.raises(ValueError, match="time_mask 200 is longer than the 130 frames"):
        augmented(Augment(time_mask=200), windows())


@pytest.mark.parametrize(
    "values",
    [{"freq_mask": -1}, {"time_mask": 2.5}, {"masks": 0}, {"mixup_alpha": -0.1}, {"gain_db": float("inf")}],
)
def test_impossible_options_are_refused(values):
    with pytest.raises(ValueError, match="augment"):
        Augment(**values)


def test_options_survive_json_and_an_older_record_reads_as_off():
    strong = BUNDLES["strong"]
    assert Augment.from_dict(json.loads(json.dumps(strong.to_dict()))) == strong
    assert Augment.from_dict({"freq_mask": 16}) == Augment(freq_mask=16)


def test_bundles_go_from_none_to_light_to_strong():
    study, light, strong = bundle("study"), bundle("light"), bundle("strong")
    assert not study.active and light.active and strong.active
    assert (light.freq_mask, light.time_mask, light.masks) == (
        strong.freq_mask,
        strong.time_mask,
        strong.masks,
    )
    assert light.mixup_alpha == light.gain_db == 0 and strong.mixup_alpha > 0 and strong.gain_db > 0


def test_an_unknown_bundle_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown augment bundle 'heavy'; known: study, light, strong"):
        bundle("heavy")


def test_the_options_load_without_torch_as_the_command_line_builds_them():
    code = "import sys, genre.train.augment; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
