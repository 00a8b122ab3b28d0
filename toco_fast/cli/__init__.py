"""Command lines: ``train``, ``evaluate``, ``infer``, ``diagnose``, ``convert_official``, ``demo``, ``info`` (run as
``python -m toco_fast.<name>``) and the argument helpers they share (``common``)."""
