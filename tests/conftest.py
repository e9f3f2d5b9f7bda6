"""Test setup: without a CUDA GPU, Triton kernels run in the interpreter.

TRITON_INTERPRET must be set before triton is imported anywhere.
"""

import os
import shutil
import subprocess


def _has_cuda_gpu() -> bool:
    if os.environ.get("ENTFLASH_FORCE_INTERPRET") == "1":
        return False
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except Exception:
        return False


if not _has_cuda_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Fresh but reproducible random inputs per test (seed from the test id)."""
    import zlib

    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
