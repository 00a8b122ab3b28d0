"""Offline dataset tools, run once before training rather than inside it.

* ``make_synthetic``: render the synthetic shapes dataset (``python -m toco_fast.data.synthetic``).
* ``prepare_voc``: VOC split lists and label cache (``python -m toco_fast.data.prepare_voc``).
* ``prepare_coco``: COCO masks, lists and label cache (``python -m toco_fast.data.prepare_coco``).
* ``check``: ``check_dataset``, decode and validate every file of a split (``--check-data``).

Nothing is imported here, so a command loads only its own module: the three commands need no torch.
"""
