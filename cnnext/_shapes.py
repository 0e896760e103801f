"""Output-size arithmetic for the fake kernels (csrc/common holds the checks and the same rules
for the real kernels; tests/test_opcheck.py proves the two agree). Written with plain
integer arithmetic so it also works on SymInts under torch.compile."""


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
