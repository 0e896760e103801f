"""Packaging: `make wheel` (pip wheel --no-build-isolation) gives a wheel that installs into a
fresh virtual environment holding only the pinned torch and numpy, and computes a conv and a
pool there; the built extension records its torch version and refuses another one.

The wheel is built in the tree, as `make wheel` builds it: setuptools' build_ext reuses the
objects ninja already compiled from the current sources (about 30 s to link and pack); from
a clean tree it compiles everything (about 3 min on 2 cores). The fresh venv with torch from
the local package index takes about 30-60 s more.
"""
import glob
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import cnnext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_records_torch_version():
    from cnnext._build_info import TORCH_VERSION

    assert TORCH_VERSION == torch.__version__


def test_other_torch_version_raises_import_error():
    script = "import torch; torch.__version__ = '1.0.0'; import cnnext"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cnnext was built against torch " + torch.__version__)
    assert "torch 1.0.0 is installed" in last and "rebuild" in last


CHECK = textwrap.dedent("""
    import os, sys, torch, cnnext
    import cnnext.functional as CF
    assert os.path.dirname(cnnext.__file__).startswith(sys.prefix), cnnext.__file__
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(CF.conv2d(x, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1))
    torch.testing.assert_close(CF.max_pool2d(x, 3, 2, 1), torch.nn.functional.max_pool2d(x, 3, 2, 1))
    print("wheel ok", torch.__version__)
""")


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path):
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                    "-q", "-w", str(dist), ROOT], check=True, timeout=1800)
    (wheel,) = glob.glob(str(dist / "cnnext-*.whl"))
    # No system site-packages: the venv sees only what is installed into it.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    pinned = "torch==" + torch.__version__.split("+")[0]
    subprocess.run([python, "-m", "pip", "install", "-q", pinned, wheel], check=True,
                   timeout=1200)
    # The venv's own site-packages only: a PYTHONPATH naming the source tree would shadow it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wheel ok " + torch.__version__)
