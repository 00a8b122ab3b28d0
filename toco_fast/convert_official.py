"""``python -m toco_fast.convert_official``: see ``toco_fast.cli.convert_official``."""
import sys

from toco_fast.cli.convert_official import main

if __name__ == "__main__":
    sys.exit(main())
