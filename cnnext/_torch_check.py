"""The compiled extension links torch's C++ library of the version it was built against; any
other torch fails at load with an undefined symbol (or worse, later). Say so plainly first."""
import torch


def check_torch_version():
    try:
        from ._build_info import TORCH_VERSION
    except ImportError:  # a source tree that was never built: importing _C will say so
        return
    if torch.__version__ != TORCH_VERSION:
        raise ImportError(
            f"cnnext was built against torch {TORCH_VERSION} but torch {torch.__version__} is "
            "installed; its compiled extension only works with the torch it was built with. "
            "Install torch=={} again, or rebuild cnnext for this torch: `pip install "
            "--no-build-isolation --no-deps --force-reinstall <cnnext source or sdist>` "
            "(in a checkout: `make install`).".format(TORCH_VERSION.split("+")[0])
        )
