"""Drop-in modules: subclasses of the torch.nn classes they replace, so constructors, init,
repr and state_dict are torch's own; only the computation goes through cnnext."""
import torch

from . import functional as CF


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d computed by cnnext.functional.conv2d (every padding_mode works)."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(
                input, self._reversed_padding_repeated_twice, mode=self.padding_mode
            )
            return CF.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return CF.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
