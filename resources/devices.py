"""Device defaults without Dagster: the accelerator resource and the plain-function benchmarks share them."""

from __future__ import annotations

import torch


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs that support it (else float16); float32 on CPU, where matmuls are fastest and exact."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
