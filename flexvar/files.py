"""Files replaced whole: written under a temporary name beside their place, renamed over it on success."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside `path` (this process's own, ending in `suffix`) for the block to write; when
    the block ends, renames it over `path`; when it raises (Ctrl-C included), removes it. So `path` holds either
    what it held before or the whole new file, and no temporary file stays behind."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """`path`'s text replaced whole (`replaced`)."""
    with replaced(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`path`'s bytes replaced whole (`replaced`)."""
    with replaced(path) as tmp:
        tmp.write_bytes(data)


def writable_folder(folder: str | os.PathLike) -> str | None:
    """None where files can be made in `folder` (tried: a folder made there and removed), else why not (the OS's
    reason). Checked before a long run that writes there at its end."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".flexvar-", dir=folder))
    except OSError as e:
        return e.strerror or str(e)
    return None
