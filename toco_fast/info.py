"""``python -m toco_fast.info``: print what this installation can use."""
from toco_fast._info import availability_report

if __name__ == "__main__":
    print(availability_report())
