"""The smallest end-to-end check: the extension loads and conv2d matches torch."""
import torch
import torch.nn.functional as F

import cnnext
from conftest import assert_close


def test_conv2d_matches_torch_forward_and_backward():
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = cnnext.functional.conv2d(x, w, b, stride=2, padding=1)
    ref = F.conv2d(x, w, b, stride=2, padding=1)
    assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        assert_close(a, e)
