"""``python -m toco_fast.infer``: see ``toco_fast.cli.infer``."""
import sys

from toco_fast.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
