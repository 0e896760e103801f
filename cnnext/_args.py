"""Python-style arguments (int or sequence of ints) read as torch's argument parser reads them,
with torch's error messages."""
import operator

import torch


def _as_int(value):
    """An int-like value (int, SymInt, numpy integer, 0-d integer tensor) as an int, the way
    torch's argument parser accepts them; None for anything else (bool and float included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, torch.SymInt)):
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype.is_complex or (
            value.dtype == torch.bool
        ):
            return None
    elif type(value).__name__.startswith("bool"):  # numpy.bool_ has __index__ too
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def integer(value, name, op="conv2d"):
    """An int argument (groups): torch rejects bool and float with a TypeError."""
    result = _as_int(value)
    if result is None:
        raise TypeError(f"cnnext.{op}: {name} must be an int, got {value!r}")
    return result


def int_list(value, name, op="conv2d"):
    """An int[2] argument as torch's argument parser reads it: an int is repeated twice, a
    sequence of ints is kept at its length (the length is checked later, in torch's order);
    anything else is a TypeError."""
    single = _as_int(value)
    if single is not None:
        return (single, single)
    if isinstance(value, (tuple, list, torch.Size)):
        values = tuple(_as_int(v) for v in value)
        if all(v is not None for v in values):
            return values
    raise TypeError(f"cnnext.{op}: {name} must be an int or a pair of ints, got {value!r}")
