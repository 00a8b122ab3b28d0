"""``python -m toco_fast.evaluate``: see ``toco_fast.cli.evaluate``."""
import sys

from toco_fast.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
