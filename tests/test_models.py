"""The six architectures: shapes, gradients, the study's bugs fixed, pretrained loading, bf16."""

import logging

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from data_pipeline.errors import UserInputError
from genre.models import count_parameters, create_model, get_spec, model_names, resolve_weights
from genre.models import pretrained as pretrained_module
from genre.models.registry import _REGISTRY, register_model

SIX = ["cnn3", "cnn4", "cnn4_gru", "efficientnet_b0", "efficientnet_b0_gru", "vgg11"]
GRU_MODELS = ["cnn4_gru", "efficientnet_b0_gru"]


def log_mel_batch(batch: int, n_mels: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Random dB values in prepare's range [-80, 0]."""
    generator = torch.Generator().manual_seed(seed)
    return -80 * torch.rand(batch, 1, n_mels, frames, generator=generator)


def calibrated(name: str) -> torch.nn.Module:
    """A fresh model in eval mode whose batch-norm statistics come from data, as after training.

    Freshly built, eval-mode EfficientNet shrinks activations to ~1e-6 (running variance 1 in every
    layer), which would make any comparison of outputs vacuous.
    """
    model = create_model(name).train()
    with torch.no_grad():
        for seed in range(3):
            model(log_mel_batch(8, 128, 130, seed=100 + seed))
    return model.eval()


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """The hub's offline mode, and library caches in empty folders."""
    # huggingface_hub fixes its offline flag when first imported: not while this test sets it.
    import huggingface_hub.constants  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_the_registry_holds_the_six_in_the_studys_order():
    assert model_names()[:6] == SIX


@pytest.mark.parametrize("name", SIX)
@pytest.mark.parametrize("shape", [(128, 130), (64, 64), (96, 200)])
def test_every_model_maps_any_input_from_64_up_to_ten_logits(name, shape):
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(log_mel_batch(3, *shape)).shape == (3, 10)


@pytest.mark.parametrize("name", SIX)
def test_backward_reaches_every_trainable_parameter(name):
    model = create_model(name).train()
    logits = model(log_mel_batch(4, 64, 96))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert missing == []


@pytest.mark.parametrize("name", SIX)
def test_a_samples_output_does_not_depend_on_the_rest_of_its_batch(name):
    # The study's GRU ran across the batch (batch_first missing): each output mixed other samples.
    model = calibrated(name)
    batch = log_mel_batch(4, 128, 130)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(4)])
    assert together.std() > 1e-3  # outputs that differ between samples, so the check means something
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(("name", "steps"), [("cnn4_gru", 8), ("efficientnet_b0_gru", 5)])
def test_gru_models_run_over_a_real_time_axis_of_each_sample(name, steps):
    # At 128x130 the study's 2,2,4,8 pooling would leave one time step: nothing for a GRU to read.
    model = create_model(name).eval()
    seen = []
    model.get_submodule("head.gru" if name == "efficientnet_b0_gru" else "2.gru").register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].shape)
    )
    with torch.no_grad():
        model(log_mel_batch(3, 128, 130))
    batch, time_steps, _ = seen[0]  # batch_first: [B, T, C]
    assert (batch, time_steps) == (3, steps)


@pytest.mark.parametrize("name", SIX)
def test_eval_mode_is_deterministic_and_train_mode_uses_dropout(name):
    model = create_model(name, dropout=0.5)
    batch = log_mel_batch(2, 64, 64)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(batch), model(batch), atol=0, rtol=0)
        model.train()
        assert not torch.equal(model(batch), model(batch))


@pytest.mark.parametrize("name", SIX)
def test_forward_under_bf16_autocast_runs_on_cpu(name):
    model = create_model(name).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(log_mel_batch(2, 64, 64))
    assert logits.shape == (2, 10) and torch.isfinite(logits.float()).all()


def test_efficientnet_weights_load_from_a_local_file_the_timm_way(tmp_path, offline):
    import timm

    imagenet = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    save_file(imagenet, str(tmp_path / "efficientnet_b0.safetensors"))
    source = resolve_weights("efficientnet_b0", "yes", tmp_path)
    assert source is not None and source.kind == "file"
    for name in ("efficientnet_b0", "efficientnet_b0_gru"):
        state = create_model(name, weights=source).net.state_dict()
        # One input channel: timm sums the RGB kernels of the stem.
        torch.testing.assert_close(
            state["conv_stem.weight"], imagenet["conv_stem.weight"].sum(1, keepdim=True)
        )
        torch.testing.assert_close(state["blocks.3.0.conv_pw.weight"], imagenet["blocks.3.0.conv_pw.weight"])
        scratch = create_model(name).net.state_dict()
        assert not torch.equal(scratch["blocks.3.0.conv_pw.weight"], imagenet["blocks.3.0.conv_pw.weight"])


def test_vgg_weights_load_from_a_local_file_with_the_stem_summed(tmp_path, offline):
    imagenet = torchvision.models.vgg11(weights=None).state_dict()
    torch.save(imagenet, tmp_path / "vgg11-8a719046.pth")
    source = resolve_weights("vgg11", "yes", tmp_path)
    features = create_model("vgg11", weights=source).net.features.state_dict()
    torch.testing.assert_close(features["0.weight"], imagenet["features.0.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(features["3.weight"], imagenet["features.3.weight"])


def test_weights_in_the_librarys_cache_are_found_without_a_network(tmp_path, offline):
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.vgg11(weights=None).state_dict(), checkpoints / "vgg11-8a719046.pth")
    source = resolve_weights("vgg11", "auto")
    assert source is not None and source.location == str(checkpoints / "vgg11-8a719046.pth")


def test_pretrained_yes_without_weights_says_what_to_do(tmp_path, offline):
    with pytest.raises(UserInputError, match=r"--weights FOLDER, or pass --pretrained no"):
        resolve_weights("efficientnet_b0", "yes", tmp_path)


def test_pretrained_auto_without_weights_warns_once_and_trains_from_scratch(offline, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_weights("vgg11", "auto", model="vgg11") is None
    assert len(caplog.records) == 1 and "training from scratch" in caplog.records[0].getMessage()


def test_pretrained_no_never_looks(monkeypatch):
    monkeypatch.setattr(pretrained_module, "find_weights", pytest.fail)
    assert resolve_weights("vgg11", "no") is None


def test_models_without_imagenet_weights_need_none():
    assert not get_spec("cnn4").supports_pretrained
    assert resolve_weights(get_spec("cnn4").pretrained_weights, "yes") is None


def test_the_registry_carries_each_models_defaults():
    assert [get_spec(n).amp for n in SIX] == [False, False, False, True, True, True]
    assert all(get_spec(n).lr == 1e-4 for n in SIX)


def test_a_seventh_model_is_one_function_and_one_registration():
    @register_model("tiny_mlp", description="a test model")
    def tiny_mlp(num_classes, dropout, weights):
        return torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(16, num_classes)
        )

    try:
        model = create_model("tiny_mlp", num_classes=4)
        assert model(log_mel_batch(2, 64, 64)).shape == (2, 4)
        assert count_parameters(model) == 16 * 4 + 4
        assert "tiny_mlp" in model_names()
    finally:
        del _REGISTRY["tiny_mlp"]


def test_an_unknown_model_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: cnn3, cnn4"):
        create_model("resnet9000")
