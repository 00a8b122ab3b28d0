"""``python -m toco_fast.train``: see ``toco_fast.cli.train``."""
import sys

from toco_fast.cli.train import main

sys.exit(main())
