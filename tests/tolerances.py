"""One tolerance table for the whole suite.

fp32 fast paths must match the reference to ~1e-5 relative. For fp16/bf16, flash-attention's rule: the fast path's
error against a float64 reference may be at most twice the error of plain PyTorch run in the same low precision,
plus a small absolute slack.
"""
import torch

FP32_RTOL = 1e-5
FP32_ATOL = 1e-6
LOWPREC_ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_close_fp32(actual: torch.Tensor, expected: torch.Tensor, rtol: float = FP32_RTOL,
                      atol: float = FP32_ATOL, what: str = "") -> None:
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


def assert_close_lowprec(actual: torch.Tensor, torch_lowprec: torch.Tensor, reference64: torch.Tensor,
                         dtype: torch.dtype, what: str = "") -> None:
    """|actual - ref64| <= 2 * |torch_lowprec - ref64| + atol, elementwise (max over elements)."""
    ref = reference64.double()
    fast_err = (actual.double() - ref).abs().max().item()
    torch_err = (torch_lowprec.double() - ref).abs().max().item()
    bound = 2 * torch_err + LOWPREC_ATOL[dtype]
    assert fast_err <= bound, f"{what}: {dtype} error {fast_err:.3e} > 2*{torch_err:.3e} + {LOWPREC_ATOL[dtype]}"
