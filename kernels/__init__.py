"""Triton kernels of toco_fast, installed as ``toco_fast.kernels``.

Each module holds ``@triton.jit`` kernels and thin launchers (tensors in, tensors out). Nothing here does autograd
or dispatch; ``toco_fast.ops`` does. Importing a kernel module imports triton, so ``toco_fast`` imports them lazily.
"""
