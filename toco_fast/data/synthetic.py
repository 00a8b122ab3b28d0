"""``python -m toco_fast.data.synthetic``: generate the synthetic shapes dataset (see
``toco_fast.data.tools.make_synthetic`` for the flags and content, ``toco_fast.data.layouts.synthetic`` for the
layout it writes). Does not import torch."""
import sys

from .tools.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
