"""Drop-in modules: subclasses of the torch.nn classes they replace, so constructors, init,
repr and state_dict are torch's own; only the computation goes through cnnext."""
import torch

from . import functional as CF


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d computed by cnnext.functional.conv2d (every padding_mode works)."""

    _fused_relu = False

    def _conv_forward(self, input, weight, bias):
        relu = self._fused_relu
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(
                input, self._reversed_padding_repeated_twice, mode=self.padding_mode
            )
            return CF.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups,
                             _relu=relu)
        return CF.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                         _relu=relu)


class Conv2dReLU(Conv2d):
    """Conv2d followed by ReLU, the ReLU run in the conv operator's epilogue (made by
    cnnext.convert(fuse=True)). Same parameters and state_dict as the Conv2d."""

    _fused_relu = True

    def extra_repr(self):
        return super().extra_repr() + ", relu=True"


# ---- pooling ------------------------------------------------------------------------------
class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by cnnext.functional.max_pool2d."""

    def forward(self, input):
        return CF.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )


class AvgPool2d(torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d computed by cnnext.functional.avg_pool2d."""

    def forward(self, input):
        return CF.avg_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override,
        )


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d computed by cnnext.functional.adaptive_avg_pool2d."""

    def forward(self, input):
        return CF.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    """torch.nn.AdaptiveMaxPool2d computed by cnnext.functional.adaptive_max_pool2d."""

    def forward(self, input):
        return CF.adaptive_max_pool2d(input, self.output_size, self.return_indices)
