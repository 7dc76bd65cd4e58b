"""C identifiers from IR tensor names, shared by the targets that write C (c, fixed-point)."""

from __future__ import annotations

import re


class CNames:
    """`names(tensor, prefix)` -> a valid C identifier `prefix_<tensor>`, the same for the
    same arguments and unique among those handed out by this object."""

    def __init__(self) -> None:
        self.taken: dict[str, str] = {}

    def __call__(self, name: str, prefix: str) -> str:
        key = f"{prefix}:{name}"
        if key not in self.taken:
            base = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
            ident, i = base, 1
            while ident in self.taken.values():
                i += 1
                ident = f"{base}_{i}"
            self.taken[key] = ident
        return self.taken[key]
