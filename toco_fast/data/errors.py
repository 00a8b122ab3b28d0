"""The one error type of the data layer."""


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent.

    The message always starts with the offending path (file, folder or list file) followed by the problem,
    e.g. ``"/data/VOC2012/JPEGImages/2007_000032.jpg: cannot read image (truncated file)"``.
    """
