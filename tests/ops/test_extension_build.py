"""The lattice extension is built, and with its CUDA kernels wherever a CUDA toolkit is present (as on CI)."""
import os
import shutil

import pytest
import torch


def test_extension_imports():
    from toco_fast.ops.extension import extension

    assert hasattr(extension("test"), "lattice_filter")


@pytest.mark.skipif(shutil.which("nvcc") is None or not torch.version.cuda or os.environ.get("TOCO_FAST_CUDA") == "0",
                    reason="no CUDA toolkit, a CPU-only torch, or TOCO_FAST_CUDA=0: the CUDA sources are not built")
def test_cuda_sources_were_compiled():
    from toco_fast.ops.extension import extension

    assert extension("test").cuda_enabled(), "nvcc is on PATH but toco_fast._C was built without its CUDA kernels"
