"""What this installation can use: versions, the GPU, Triton, xformers, the compiled extension and the kernel knob
(``toco_fast.info()``, ``python -m toco_fast.info``)."""
import importlib.util
import os


def availability_report() -> str:
    """A few lines: versions, the GPU, Triton, xformers, the ``toco_fast._C`` extension and the kernel knob."""
    import torch

    from toco_fast._version import __version__
    from toco_fast.ops.extension import extension_status

    lines = [
        f"toco_fast {__version__}",
        f"torch {torch.__version__} (CUDA build {torch.version.cuda})",
        f"CUDA device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
        f"triton: {'installed' if importlib.util.find_spec('triton') else 'missing'}"
        f" (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')})",
        f"xformers: {'installed' if importlib.util.find_spec('xformers') else 'missing'}",
        f"toco_fast._C extension: {extension_status()}",
        f"TOCO_FAST_KERNELS={os.environ.get('TOCO_FAST_KERNELS', 'auto')}",
    ]
    return "\n".join(lines)
