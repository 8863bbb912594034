"""The ``stimela doc``-like parameter table (``stepcab doc``, the UI's Step view)."""

from __future__ import annotations

import json
from typing import Any, Sequence


def format_schema(title: str, info: str, sections: Sequence[tuple[str, dict]]) -> str:
    """A ``stimela doc``-like table: name, dtype, required, default, info."""
    lines = [title]
    if info:
        lines.append(f"  {info.strip()}")
    for header, schema in sections:
        lines.append("")
        lines.append(f"{header}:")
        if not schema:
            lines.append("  (none)")
            continue
        rows = [("name", "dtype", "required", "default", "info")]
        for name, p in schema.items():
            rows.append((name, str(p.dtype_str), "yes" if p.required else "", _default_text(p),
                         " ".join(str(p.info or "").split())))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return "\n".join(line.rstrip() for line in lines)


def _default_text(p: Any) -> str:
    from .recipe.model import UNSET
    if p.default is not UNSET:
        return json.dumps(p.default) if not isinstance(p.default, str) else p.default
    if p.implicit is not UNSET and p.implicit is not None:
        return f"(implicit) {p.implicit}"
    return ""
