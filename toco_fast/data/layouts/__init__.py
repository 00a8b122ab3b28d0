"""Dataset layouts: where one split's images, masks and image-level labels live on disk, as an ``ImageSource``.

* ``source``: the ``ImageSource`` base class, its shared checks and ``DEFAULT_LISTS_SUBDIR``.
* ``voc``, ``coco``, ``folder``: PASCAL VOC, MS-COCO 2014 and a plain folder with a label CSV.
* ``synthetic``: the generated shapes dataset (VOC layout plus a meta file with its class names).
* ``factory``: ``open_source(kind, root, split)``, the one entry point configs and command lines use.

None of these modules imports torch.
"""
