"""``python -m toco_fast.data.prepare_voc``: write the split lists and the image-level label cache of a VOC-layout
dataset (see ``toco_fast.data.tools.prepare_voc``). Does not import torch."""
import sys

from .tools.prepare_voc import main

if __name__ == "__main__":
    sys.exit(main())
