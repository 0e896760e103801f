"""convert(model): swap torch.nn layers for their cnnext twins, weights and state kept."""
import copy

import torch

from . import nn as cnn

# Exact types only: a user's subclass of torch.nn.Conv2d may override forward, so it is kept.
SWAPS = {
    torch.nn.Conv2d: cnn.Conv2d,
    torch.nn.MaxPool2d: cnn.MaxPool2d,
    torch.nn.AvgPool2d: cnn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: cnn.AdaptiveAvgPool2d,
    torch.nn.AdaptiveMaxPool2d: cnn.AdaptiveMaxPool2d,
}


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """Returns `model` with every torch.nn layer that cnnext implements replaced by the cnnext
    module. The replacement keeps the same parameters, buffers, hooks and training mode (the
    module's class is swapped for the cnnext subclass, which adds no state). With
    inplace=False (the default) the model is deep-copied first."""
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        target = SWAPS.get(type(module))
        if target is not None:
            module.__class__ = target
    return model
