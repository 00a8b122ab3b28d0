"""``python -m toco_fast.demo``: see ``toco_fast.cli.demo``."""
import sys

from toco_fast.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
