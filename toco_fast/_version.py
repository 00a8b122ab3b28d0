"""The package version (one place: ``toco_fast.__version__`` and ``python -m toco_fast.info`` read it)."""
__version__ = "0.1.0"
