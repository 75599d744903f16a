"""The loaded ``_core`` extension, with the package's ggml backends registered once."""

from __future__ import annotations

from . import _core
from ._launcher import bin_dir

_core.load_backends(str(bin_dir()))

core = _core


def reraise_unencodable(*texts: object) -> None:
    """After the extension refused arguments with a TypeError: if a str among ``texts`` is not valid UTF-8
    (lone surrogates), raise the UnicodeEncodeError naming the position instead (the clearer error)."""
    for text in texts:
        if isinstance(text, str):
            text.encode("utf-8")
