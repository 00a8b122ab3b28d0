"""``python -m toco_fast.diagnose``: see ``toco_fast.cli.diagnose``."""
import sys

from toco_fast.cli.diagnose import main

if __name__ == "__main__":
    sys.exit(main())
