"""The one atomic writer: all-or-nothing replacement, no temporary left behind, folders created."""
import os

import pytest

from toco_fast.io.atomic import TMP_PREFIX, atomic_write, atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("durable", [True, False])
def test_replaces_whole_file_and_creates_folders(tmp_path, durable):
    path = tmp_path / "a" / "b" / "out.txt"
    assert atomic_write_text(path, "first\n", durable=durable) == str(path)
    atomic_write_bytes(path, b"second", durable=durable)
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["out.txt"]


def test_failure_mid_write_keeps_the_previous_content(tmp_path):
    path = tmp_path / "cache.bin"
    atomic_write_bytes(path, b"good")

    def half_then_crash(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"good"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(TMP_PREFIX)]


def test_new_files_get_the_usual_permissions_and_replacements_keep_theirs(tmp_path):
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.txt"
        atomic_write_text(fresh, "x")
        assert fresh.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
