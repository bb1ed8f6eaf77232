"""Writing a run's outputs: atomically, and with errors that name the file being written.

A full disk or a folder without write permission surfaces deep inside a writer (pandas,
``torch.save``'s zip writer) with a message that names no file, or none of ours. Every output
of a run goes through :func:`output_path`, so such an error becomes one :class:`OutputError`
naming the file and what it holds, while the old file (if any) stays as it was and no partial
file is left (:func:`benchmark.atomic.atomic_path`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.atomic import atomic_path, write_json


class OutputError(OSError):
    """An output could not be written; ``errno`` is the operating system's, the message names
    the file."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def naming_errors(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn an OSError of the block (full disk, no permission, quota) into an
    :class:`OutputError` naming ``path`` and ``what`` it holds."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(
            err.errno,
            f"{path}: cannot write the {what} ({reason}); free disk space or fix the folder's "
            "permissions, then rerun the same command to resume",
        ) from err


@contextlib.contextmanager
def output_path(path: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """A temporary path to write ``what`` into, renamed onto ``path`` on success; on an
    OSError the temporary file is removed, ``path`` keeps its old content and the error names
    it (:func:`naming_errors`)."""
    with naming_errors(path, what), atomic_path(path) as tmp:
        yield tmp


def save_json(path: str | os.PathLike[str], data: Any, what: str) -> None:
    """``data`` as indented, key-sorted JSON (:func:`benchmark.atomic.write_json`)."""
    with naming_errors(path, what):
        write_json(path, data)


def save_csv(path: str | os.PathLike[str], frame: pd.DataFrame, what: str) -> None:
    with output_path(path, what) as tmp:
        frame.to_csv(tmp, index=False)


def save_torch(path: str | os.PathLike[str], state: Any, what: str) -> None:
    """``torch.save`` through a Python file: its zip writer then reports a failed write as the
    OSError it is (given a path, it says only "[enforce fail at inline_container.cc]")."""
    import torch

    with output_path(path, what) as tmp, open(tmp, "wb") as stream:
        torch.save(state, stream)
