"""Output-size arithmetic for the fake kernels (csrc/common holds the checks and the same rules
for the real kernels; tests/test_opcheck.py proves the two agree). Written with plain
integer arithmetic so it also works on SymInts under torch.compile."""


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ---- pooling (mirrors csrc/common/pool_shapes.h; tests/test_pool2d.py checks agreement) ----
def pool_output_size(size, kernel, padding, stride, dilation, ceil_mode):
    """torch's pooling_output_shape: floor or ceil; in ceil mode the last window must start
    inside the input or the left padding."""
    numerator = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out = out - 1
    return out
