"""The accelerator resource: which device and dtype the GPU-pool assets run on."""

from __future__ import annotations

import dagster as dg
import torch
from pydantic import Field

from resources.devices import default_dtype


class Accelerator(dg.ConfigurableResource):
    """CUDA when present, CPU otherwise; bfloat16 on GPUs that support it, float32 on CPU."""

    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: str = Field(default="auto", description="'auto', 'float32', 'bfloat16' or 'float16'")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return default_dtype(self.torch_device())

    def describe(self) -> str:
        device = self.torch_device()
        name = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
        )
        return f"{device} ({name}), {str(self.torch_dtype()).removeprefix('torch.')}"
