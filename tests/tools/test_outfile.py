"""``OutFile``: a tool's --out checked before a long read, then written whole or not at all, on real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mixer.tools.outfile import OutFile


def test_a_write_that_fails_before_commit_leaves_the_earlier_file_whole_and_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "night.md"
    target.write_text("last week")
    out = OutFile(target)
    out.open().write(b"half of this w")  # then the disk fills, or a signal comes
    out.discard()
    assert target.read_text() == "last week" and list(tmp_path.iterdir()) == [target]


def test_commit_replaces_the_file_keeping_its_mode_and_a_new_one_gets_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "night.md"
    target.write_text("last week")
    target.chmod(0o640)
    out = OutFile(target)
    assert target.read_text() == "last week"  # nothing happens to it before commit
    out.open().write(b"tonight")
    out.commit()
    assert target.read_text() == "tonight" and stat.S_IMODE(target.stat().st_mode) == 0o640
    out.discard()  # after a commit: nothing to remove
    assert list(tmp_path.iterdir()) == [target]
    fresh = tmp_path / "fresh.md"
    mask = os.umask(0o027)
    try:
        new = OutFile(fresh)
    finally:
        os.umask(mask)
    new.commit()
    assert fresh.read_bytes() == b"" and stat.S_IMODE(fresh.stat().st_mode) == 0o640  # 0o666 less the umask


def test_a_link_stays_a_link_and_a_special_file_is_written_in_place(tmp_path: Path) -> None:
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    out = OutFile(link)
    out.open().write(b"new")
    out.commit()
    assert link.is_symlink() and real.read_text() == "new"
    null = OutFile(Path(os.devnull))
    null.open().write(b"gone")
    null.commit()
    assert Path(os.devnull).exists() and not Path(os.devnull).is_file()  # not replaced by a regular file


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing/x.md", "the directory {tmp}/missing does not exist"),
        ("file.txt/x.md", "the directory {tmp}/file.txt is not a directory"),
        (".", "it is a directory; give a file name"),
    ],
)
def test_a_destination_that_cannot_be_written_is_one_clear_error(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / "file.txt").write_text("")
    path = tmp_path / name
    with pytest.raises(ValueError) as raised:
        OutFile(path)
    assert str(raised.value) == f"cannot write {path}: {problem.format(tmp=tmp_path)}"
