"""``python -m toco_fast.info``: see ``toco_fast.cli.info``."""
import sys

from toco_fast.cli.info import main

if __name__ == "__main__":
    sys.exit(main())
