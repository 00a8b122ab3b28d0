"""Lazy re-exports for package ``__init__`` modules (PEP 562), so importing a package stays cheap."""
import importlib
from typing import Callable, Dict, List


def lazy_exports(package: str, exports: Dict[str, str]) -> Callable[[str], object]:
    """Return a module ``__getattr__`` that imports ``exports[name]`` (a submodule of ``package``) on first use."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{exports[name]}")
        return getattr(module, name)

    return __getattr__


def export_names(exports: Dict[str, str]) -> List[str]:
    return sorted(exports)
