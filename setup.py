"""Build and install toco_fast.

The pure-Python package lives in ``toco_fast/``; the Triton kernels in the top-level ``kernels/`` folder are
installed as ``toco_fast.kernels``; the YAML configs in ``configs/`` become the package ``toco_fast.configs``; the
C++/CUDA permutohedral-lattice extension in ``csrc/`` becomes ``toco_fast._C`` (see ``_lattice_extension``).
"""
import glob
import os

from setuptools import find_packages, setup


def _packages():
    packages = find_packages(include=["toco_fast", "toco_fast.*"])
    return packages + ["toco_fast.kernels", "toco_fast.configs"]


def _lattice_extension():
    """Extension modules and build command for csrc/ (none while csrc/ has no sources)."""
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources:
        return [], {}
    raise NotImplementedError("csrc/ build not wired yet")


ext_modules, cmdclass = _lattice_extension()

setup(
    name="toco_fast",
    version="0.1.0",
    description="Fast, faithful Token Contrast (ToCo, CVPR 2023) training for weakly-supervised segmentation",
    packages=_packages(),
    package_dir={"toco_fast.kernels": "kernels", "toco_fast.configs": "configs"},
    package_data={"toco_fast.configs": ["*.yaml"]},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "timm>=1.0", "numpy", "pillow", "pyyaml", "safetensors"],
    extras_require={"triton": ["triton"], "test": ["pytest"], "xformers": ["xformers"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
