"""The loaded ``_core`` extension, with the package's ggml backends registered once."""

from __future__ import annotations

from . import _core
from ._launcher import bin_dir

_core.load_backends(str(bin_dir()))

core = _core
