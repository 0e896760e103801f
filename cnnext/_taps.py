"""Window taps <-> flat indices, in torch operators (used where a graph or a double backward
needs max_pool2d_taps' positions as torch's indices).

A tap is r * kernel_w + s: the maximum's row and column within its window, in dilation steps
from the window's first element inside the input (csrc/cpu/pool2d_kernels.inc); 255 marks a
window with no element."""
import torch

TAP_EMPTY = 255


def _window_starts(out, size, kernel, stride, padding, dilation, device):
    """First element inside the input of each output's window, and whether the window has one
    (pool_windows.h's max_pool_range)."""
    o = torch.arange(out, device=device)
    begin = o * stride - padding
    end = torch.clamp(begin + (kernel - 1) * dilation + 1, max=size)
    begin = torch.where(begin < 0, begin + ((-begin + dilation - 1) // dilation) * dilation, begin)
    return begin, begin < end


def _pairs(kernel_size, stride, padding, dilation):
    """The operators' int[2] arguments as pairs (one value stands for both; no stride: the
    kernel's)."""
    def pair(x):
        return (x[0], x[-1])
    return pair(kernel_size), pair(stride if len(stride) else kernel_size), pair(padding), pair(dilation)


def _grid(taps_shape, input_hw, kernel_size, stride, padding, dilation, device):
    kernel_size, stride, padding, dilation = _pairs(kernel_size, stride, padding, dilation)
    out_h, out_w = taps_shape[2], taps_shape[3]
    rows, rows_ok = _window_starts(out_h, input_hw[0], kernel_size[0], stride[0], padding[0],
                                   dilation[0], device)
    cols, cols_ok = _window_starts(out_w, input_hw[1], kernel_size[1], stride[1], padding[1],
                                   dilation[1], device)
    nonempty = rows_ok.view(-1, 1) & cols_ok.view(1, -1)
    return rows.view(-1, 1), cols.view(1, -1), nonempty


def taps_to_indices(taps, input_hw, kernel_size, stride, padding, dilation):
    """(flat indices h * W + w, int64; nonempty mask). An empty window's index is 0: callers
    mask its contribution with `nonempty`."""
    rows, cols, nonempty = _grid(taps.shape, input_hw, kernel_size, stride, padding, dilation,
                                 taps.device)
    kernel_w, dilation = kernel_size[-1], _pairs(kernel_size, stride, padding, dilation)[3]
    t = taps.to(torch.int64)
    ih = rows + (t // kernel_w) * dilation[0]
    iw = cols + (t % kernel_w) * dilation[1]
    return torch.where(nonempty, ih * input_hw[1] + iw, 0), nonempty


def indices_to_taps(indices, input_hw, kernel_size, stride, padding, dilation):
    """uint8 taps of flat indices that lie in their windows; 255 for an empty window."""
    rows, cols, nonempty = _grid(indices.shape, input_hw, kernel_size, stride, padding, dilation,
                                 indices.device)
    kernel_w, dilation = kernel_size[-1], _pairs(kernel_size, stride, padding, dilation)[3]
    ih, iw = indices // input_hw[1], indices % input_hw[1]
    tap = ((ih - rows) // dilation[0]) * kernel_w + (iw - cols) // dilation[1]
    return torch.where(nonempty, tap, TAP_EMPTY).to(torch.uint8)
