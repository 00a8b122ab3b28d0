"""The one mixed-precision policy."""
import torch

from toco_fast.train.precision import resolve_precision


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp16", cpu).dtype == torch.bfloat16
    assert not resolve_precision("fp16", cpu).scaler
    assert "bf16" in resolve_precision("fp16", cpu).note
    assert resolve_precision("fp32", cpu).dtype is None
    cuda = torch.device("cuda", 0)
    assert resolve_precision("fp16", cuda).scaler
    assert resolve_precision("bf16", cuda).dtype == torch.bfloat16


def test_autocast_contexts():
    cpu = torch.device("cpu")
    with resolve_precision("bf16", cpu).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with resolve_precision("fp32", cpu).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert resolve_precision("fp32", cpu).grad_scaler() is None


def test_unknown_precision_is_named():
    import pytest

    with pytest.raises(ValueError, match="precision: expected one of"):
        resolve_precision("fp8", torch.device("cpu"))
