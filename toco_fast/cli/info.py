"""``python -m toco_fast.info``: print what this installation can use (``toco_fast.ops.availability``)."""
from typing import Optional, Sequence

from toco_fast.ops.availability import availability_report


def main(argv: Optional[Sequence[str]] = None) -> int:
    print(availability_report())
    return 0
