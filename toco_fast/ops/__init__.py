"""Ops with a plain PyTorch reference and a dispatching fast path (see ``toco_fast.ops._dispatch``)."""
