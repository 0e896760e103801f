"""Inference folding for convert(model, fuse=True): each BatchNorm2d folded into the conv before
it, and a ReLU after a conv run in the conv operator's epilogue (cnnext.nn.Conv2dReLU).

The model is traced with torch.fx to find which conv feeds which BatchNorm and ReLU (module
attributes say nothing about the order they are called in, and a ResNet block calls one ReLU
module three times); the result is a torch.fx.GraphModule computing the same function.
"""
import copy

import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import nn as cnn

_CONVS = (torch.nn.Conv2d, cnn.Conv2d)
_RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu)
_RELU_METHODS = ("relu", "relu_")


def _module(modules, node, types):
    if node.op != "call_module":
        return None
    module = modules[node.target]
    return module if type(module) in types else None


def _is_relu(modules, node):
    if node.op == "call_module":
        return type(modules[node.target]) is torch.nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in _RELU_METHODS


def _set_submodule(root, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _only_input(node):
    """The node's tensor input when it is its only user's only tensor argument, else None."""
    if not node.args or not isinstance(node.args[0], torch.fx.Node):
        return None
    source = node.args[0]
    return source if len(source.users) == 1 else None


def fuse_for_inference(model: torch.nn.Module) -> torch.fx.GraphModule:
    """A traced copy of `model` (in eval mode) with BatchNorm2d folded into the preceding convs
    and ReLUs fused into them. Layers are not swapped here; convert() does that after."""
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(
            "cnnext.convert(fuse=True) folds BatchNorm running statistics into the convs, which "
            "is only valid for inference: call model.eval() first (modules in training mode: "
            f"{', '.join(training[:5])}{', ...' if len(training) > 5 else ''})"
        )
    try:
        graph_module = torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception as error:  # control flow on tensor values, unsupported Python...
        raise RuntimeError(
            "cnnext.convert(fuse=True) finds conv/BatchNorm/ReLU chains by tracing the model "
            f"with torch.fx, which failed ({type(error).__name__}: {error}); fuse its traceable "
            "submodules instead, or convert without fuse"
        ) from error
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def fusable_conv(node):
        # A conv module called once, whose output feeds `node` alone (a module shared by two
        # call sites cannot take one site's BatchNorm).
        source = _only_input(node)
        if source is None or calls.get(source.target, 0) != 1:
            return None
        conv = _module(modules, source, _CONVS)
        return (source, conv) if conv is not None else None

    for node in list(graph.nodes):
        bn = _module(modules, node, (torch.nn.BatchNorm2d,))
        if bn is None or bn.running_mean is None or calls[node.target] != 1:
            continue  # without running statistics BatchNorm normalises by the batch: not a constant
        found = fusable_conv(node)
        if found is None or len(node.args) != 1 or node.kwargs:
            continue
        source, conv = found
        folded = fuse_conv_bn_eval(conv, bn)
        _set_submodule(graph_module, source.target, folded)
        modules[source.target] = folded
        node.replace_all_uses_with(source)
        graph.erase_node(node)

    for node in list(graph.nodes):
        if not _is_relu(modules, node) or len(node.args) != 1:
            continue
        if node.kwargs and set(node.kwargs) != {"inplace"}:
            continue
        found = fusable_conv(node)
        if found is None:
            continue
        source, conv = found
        conv.__class__ = cnn.Conv2dReLU
        node.replace_all_uses_with(source)
        graph.erase_node(node)

    graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module.eval()
