"""What this installation can use; ``python -m toco_fast.info`` prints it."""
import importlib.util
import os


def _extension_status() -> str:
    try:
        from toco_fast import _C  # noqa: F401
    except ImportError as exc:
        return f"not built ({exc}); run `pip install -e .` with a compiler available"
    return "built"


def availability_report() -> str:
    import torch

    import toco_fast

    lines = [
        f"toco_fast {toco_fast.__version__}",
        f"torch {torch.__version__} (CUDA build {torch.version.cuda})",
        f"CUDA device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
        f"triton: {'installed' if importlib.util.find_spec('triton') else 'missing'}"
        f" (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')})",
        f"xformers: {'installed' if importlib.util.find_spec('xformers') else 'missing'}",
        f"toco_fast._C extension: {_extension_status()}",
        f"TOCO_FAST_KERNELS={os.environ.get('TOCO_FAST_KERNELS', 'auto')}",
    ]
    return "\n".join(lines)
