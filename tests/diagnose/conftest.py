"""Fixtures of the diagnostics tests: a tiny ToCo trained in the test (``tests/trained_helpers.py``)."""
import pytest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``(run_dir, data_root)``: a tiny ToCo trained for 4 iterations on a 4-image synthetic val split."""
    from trained_helpers import train_tiny

    return train_tiny(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def no_module(monkeypatch):
    """``no_module("matplotlib")``: make importing that package (and its submodules) fail from here on, as when it
    is not installed."""
    import importlib

    import toco_fast._extras as extras

    real = importlib.import_module

    def install(name):
        def fake(module, *args, **kwargs):
            if module == name or module.startswith(name + "."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return real(module, *args, **kwargs)

        monkeypatch.setattr(extras.importlib, "import_module", fake)

    return install
