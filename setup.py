"""Build and install toco_fast.

The pure-Python package lives in ``toco_fast/``; the Triton kernels in the top-level ``kernels/`` folder are
installed as ``toco_fast.kernels``; the YAML presets in ``toco_fast/config/presets/`` are package data; the C++/CUDA
permutohedral-lattice extension in ``csrc/`` becomes ``toco_fast._C`` (see ``_lattice_extension``).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup


def _packages():
    packages = find_packages(include=["toco_fast", "toco_fast.*"])
    return packages + ["toco_fast.kernels"]


def _lattice_extension():
    """The csrc/ permutohedral-lattice extension ``toco_fast._C`` and its build command.

    CPU sources always; CUDA sources too when a GPU is visible and nvcc is found, or as forced by TOCO_FAST_CUDA=0/1
    (CI sets 1, so the CUDA code is compiled there although no GPU can run it). CUDA archs default to 8.0;9.0
    (override with TORCH_CUDA_ARCH_LIST).
    """
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources:
        return [], {}

    def find_cuda_home():
        # CUDA_HOME / CUDA_PATH, else the toolkit holding nvcc: torch's own guess follows a /usr/local/bin/nvcc
        # wrapper script to /usr/local, which has no CUDA headers.
        for name in ("CUDA_HOME", "CUDA_PATH"):
            if os.environ.get(name):
                return os.environ[name]
        candidates = ["/usr/local/cuda"]
        nvcc = shutil.which("nvcc")
        if nvcc:
            candidates.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        for home in candidates:
            if os.path.exists(os.path.join(home, "bin", "nvcc")) and \
                    os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
                return home
        return None

    cuda_home = find_cuda_home()
    if cuda_home:
        os.environ.setdefault("CUDA_HOME", cuda_home)  # read when torch.utils.cpp_extension is imported
    import torch
    from torch.utils import cpp_extension

    forced = os.environ.get("TOCO_FAST_CUDA", "")
    if forced not in ("", "0", "1"):
        raise ValueError(f"TOCO_FAST_CUDA must be 0 or 1, got {forced!r}")
    with_cuda = forced == "1" if forced else bool(torch.version.cuda and cuda_home and torch.cuda.is_available())
    # torch picks the C++ standard its headers need. -fno-trapping-math lets GCC if-convert and vectorise the
    # clamped float selects of the softmax exp (values are unchanged; FP exception flags are never read);
    # -ffp-contract=off (and nvcc's --fmad=false) keep a*b+c unfused, as in the reference code, on any -march.
    # -fopenmp: at::parallel_for is inline OpenMP, serial unless the extension itself is compiled with OpenMP
    # (it then uses the libgomp torch has loaded).
    cxx_flags = ["-O3", "-fno-trapping-math", "-ffp-contract=off", "-g0", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if not with_cuda:
        extension = cpp_extension.CppExtension("toco_fast._C", sources, extra_compile_args={"cxx": cxx_flags},
                                               extra_link_args=link_flags)
        return [extension], {"build_ext": cpp_extension.BuildExtension}
    if not cuda_home:
        raise RuntimeError("TOCO_FAST_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME")
    cpp_extension.CUDA_HOME = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    extension = cpp_extension.CUDAExtension(
        "toco_fast._C", sources + sorted(glob.glob(os.path.join("csrc", "*.cu"))),
        define_macros=[("TOCO_FAST_WITH_CUDA", None)],
        # CUDA 13 keeps its libraries in lib/ rather than lib64/.
        library_dirs=[os.path.join(cuda_home, "lib"), os.path.join(cuda_home, "lib64")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--fmad=false"]}, extra_link_args=link_flags)
    return [extension], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = _lattice_extension()

setup(
    name="toco_fast",
    version="0.1.0",
    description="Fast, faithful Token Contrast (ToCo, CVPR 2023) training for weakly-supervised segmentation",
    packages=_packages(),
    package_dir={"toco_fast.kernels": "kernels"},
    package_data={"toco_fast.config": ["presets/*.yaml"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "torchvision", "timm>=1.0", "numpy", "pillow", "pyyaml", "safetensors",
                      "tqdm"],
    extras_require={"triton": ["triton"], "test": ["pytest", "pydensecrf2"], "xformers": ["xformers"],
                    "coco": ["pycocotools"], "plots": ["matplotlib"], "tensorboard": ["tensorboard"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
