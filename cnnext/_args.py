"""Normalisation of Python-style arguments (int or sequence) to the pairs the operators take,
with torch's error messages."""
import torch


def pair(value, name, op="conv2d"):
    """int -> (v, v); a sequence of 1 or 2 ints -> a pair; anything else raises like torch."""
    if isinstance(value, bool):
        raise TypeError(f"cnnext.{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int, torch.SymInt)):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)):
        values = tuple(value)
        if all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in values):
            if len(values) == 1:
                return (values[0], values[0])
            if len(values) == 2:
                return values
            raise RuntimeError(
                f"cnnext.{op}: expected {name} to be a single integer value or a list of 2 "
                f"values to match the convolution dimensions, but got {name}={list(values)}"
            )
    raise TypeError(f"cnnext.{op}: {name} must be an int or a pair of ints, got {value!r}")
