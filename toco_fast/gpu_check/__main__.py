"""``python -m toco_fast.gpu_check``: see ``toco_fast.gpu_check.cli``."""
import sys

from toco_fast.gpu_check.cli import main

if __name__ == "__main__":
    sys.exit(main())
