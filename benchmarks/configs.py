"""The configurations every census row and model row is timed in: a dtype and a memory
layout, the same on both sides. channels_last means the input, the weight and the incoming
gradient are all channels_last (what `model.to(memory_format=torch.channels_last)` and a
channels_last input give).

torch is imported only where a tensor is touched: the command line reads this module before
it restarts itself with the allocator pinned."""
from dataclasses import dataclass


@dataclass(frozen=True)
class LayoutConfig:
    key: str  # what --config takes
    title: str  # what the report prints
    dtype_name: str  # "float32", "bfloat16", "float16"
    channels_last: bool

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def memory_format(self):
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def apply(self, tensor):
        """The tensor in this configuration's dtype and layout (itself if it already is)."""
        return tensor.to(dtype=self.dtype, memory_format=self.memory_format)

    @property
    def layout(self):
        return "channels_last" if self.channels_last else "NCHW"


CONFIGS = {c.key: c for c in (
    LayoutConfig("f32-nchw", "float32 NCHW", "float32", False),
    LayoutConfig("f32-cl", "float32 channels_last", "float32", True),
    LayoutConfig("bf16-cl", "bfloat16 channels_last", "bfloat16", True),
    LayoutConfig("bf16-nchw", "bfloat16 NCHW", "bfloat16", False),
    LayoutConfig("f16-cl", "float16 channels_last", "float16", True),
    LayoutConfig("f16-nchw", "float16 NCHW", "float16", False),
)}
DEFAULT_CONFIGS = ("f32-nchw", "f32-cl", "bf16-cl")
