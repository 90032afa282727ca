"""Mixed precision, PyTorch's native way: autocast, and a GradScaler only for fp16."""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(mode: str, model_default: bool, device: torch.device) -> str:
    """'auto' follows the model's registry default: bf16 where the device runs it natively, else
    fp16 on CUDA; on a CPU without native bf16 it stays off (emulated bf16 is slower than fp32)."""
    if mode != "auto":
        return mode
    if not model_default:
        return "off"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_native_bf16() else "off"


def autocast(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for `mode` ('off' is a no-op context)."""
    if mode == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[mode])


def grad_scaler(mode: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type, enabled=mode == "fp16")


def _cpu_has_native_bf16() -> bool:
    capability = torch.backends.cpu.get_cpu_capability()
    return "AMX" in capability or "AVX512_BF16" in capability
