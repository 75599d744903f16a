"""The loaded ``_core`` extension, with the package's ggml backends registered once."""

from __future__ import annotations

import os
import sys

from ._launcher import bin_dir, with_nvidia_dll_path

if sys.platform == "win32":  # no rpath on Windows: the DLLs sit beside the executables
    os.add_dll_directory(str(bin_dir()))
    os.environ["PATH"] = with_nvidia_dll_path(os.environ)["PATH"]  # a CUDA add-on's runtime (ggml's LoadLibrary)

from . import _core  # after the DLL folder is known

_core.load_backends(str(bin_dir()))

core = _core


def reraise_unencodable(*texts: object) -> None:
    """After the extension refused arguments with a TypeError: if a str among ``texts`` is not valid UTF-8
    (lone surrogates), raise the UnicodeEncodeError naming the position instead (the clearer error)."""
    for text in texts:
        if isinstance(text, str):
            text.encode("utf-8")
