"""The extension is built (lattice and native PAR kernel), and with its CUDA kernels where they were asked for
(TOCO_FAST_CUDA=1, as on CI) or a GPU is visible."""
import os
import shutil

import pytest
import torch


def test_extension_imports():
    from toco_fast.ops.extension import extension

    module = extension("test")
    assert hasattr(module, "lattice_filter") and hasattr(module, "par_refine")


@pytest.mark.skipif(shutil.which("nvcc") is None or not torch.version.cuda
                    or os.environ.get("TOCO_FAST_CUDA", "1" if torch.cuda.is_available() else "0") != "1",
                    reason="no CUDA toolkit, a CPU-only torch, or no GPU without TOCO_FAST_CUDA=1: the CUDA sources "
                           "are not built")
def test_cuda_sources_were_compiled():
    from toco_fast.ops.extension import extension

    assert extension("test").cuda_enabled(), "nvcc is on PATH but toco_fast._C was built without its CUDA kernels"
