"""Shared test configuration: devices, per-dtype tolerances (stated here, once), seeding."""
import pytest
import torch

import cnnext  # noqa: F401  (registers the operators)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# torch.backends.cudnn.allow_tf32 is True by default, so torch's float32 CUDA convs (and ours,
# which follow the flag) round their inputs to TF32: compared at float32 tolerances, two TF32
# results differ by ~1e-3. Tests compare exact float32; tests of TF32 itself turn it on.
torch.backends.cudnn.allow_tf32 = False

# Tolerances against torch, per dtype. float32 differs from torch only by summation order;
# half types on CUDA accumulate in float32 but round inputs/outputs.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
    # float32 convolutions on TF32 tensor cores (torch.backends.cudnn.allow_tf32): inputs
    # rounded to a 10-bit mantissa, accumulation in float32.
    "tf32": dict(rtol=1e-2, atol=1e-2),
}


def assert_close(actual, expected, dtype=None, **override):
    """torch.testing.assert_close with the project's tolerance for the dtype."""
    tol = dict(TOLERANCES[expected.dtype if dtype is None else dtype])
    tol.update(override)
    torch.testing.assert_close(actual, expected, **tol)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
