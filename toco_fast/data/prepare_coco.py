"""``python -m toco_fast.data.prepare_coco``: convert COCO 2014 instance annotations to class-id PNG masks, split
lists and the label cache (see ``toco_fast.data.tools.prepare_coco``). Does not import torch."""
import sys

from .tools.prepare_coco import main

if __name__ == "__main__":
    sys.exit(main())
