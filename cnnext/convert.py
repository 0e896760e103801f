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


def convert(model: torch.nn.Module, inplace: bool = False, fuse: bool = False) -> torch.nn.Module:
    """Returns `model` with every torch.nn layer that cnnext implements replaced by the cnnext
    module. The replacement keeps the same parameters, buffers, hooks and training mode (the
    module's class is swapped for the cnnext subclass, which adds no state). With
    inplace=False (the default) the model is deep-copied first.

    fuse=True (inference, model in eval mode) returns a torch.fx.GraphModule in which each
    BatchNorm2d is folded into the conv before it and a ReLU after a conv runs inside the conv
    operator (cnnext.Conv2dReLU); the model is copied, so inplace must be False."""
    if fuse:
        if inplace:
            raise ValueError("cnnext.convert: fuse=True builds a new traced module; inplace=True "
                             "cannot be combined with it")
        from .fuse import fuse_for_inference

        return convert(fuse_for_inference(model), inplace=True)
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        target = SWAPS.get(type(module))
        if target is not None:
            module.__class__ = target
    return model


# The inverse swaps: each cnnext class back to the torch.nn class it subclasses.
_UNSWAPS = {cnnext_class: torch_class for torch_class, cnnext_class in SWAPS.items()}


def unconvert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """The inverse of convert(): every cnnext layer back to its torch.nn class, same parameters,
    buffers, hooks, training mode and state_dict. A fused cnnext.Conv2dReLU (convert(fuse=True))
    becomes torch.ao.nn.intrinsic.ConvReLU2d(conv, ReLU()), torch's own conv+ReLU pair, whose
    state_dict keys gain a '0.' (the folded BatchNorm stays folded)."""
    if not inplace:
        model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if type(module) is cnn.Conv2dReLU:
            module.__class__ = torch.nn.Conv2d
            pair = torch.ao.nn.intrinsic.ConvReLU2d(module, torch.nn.ReLU())
            pair.train(module.training)
            if not name:
                return pair
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, pair)
            continue
        target = _UNSWAPS.get(type(module))
        if target is not None:
            module.__class__ = target
    return model
