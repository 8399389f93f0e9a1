"""``python -m migd.daemon.reference``: the README's control-tree table, from the knob table.

The table between the README's ``<!-- knobs:begin -->`` and ``<!-- knobs:end -->``
markers is generated from ``_knobs`` and ``_files`` (path, access, values,
config key and default, whether the soak writes it, help); run this module to
rewrite it, or with ``--check`` to exit 1 when it is stale (the tests call
:func:`stale`).  Rejected: a hand-kept table with a test that greps it (the
test would say what is missing, a person would still retype every range).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..mm import REASON_MASK_ALL, format_reason_mask
from ._attrs import all_knobs
from ._knobs import Knob

BEGIN, END = "<!-- knobs:begin -->", "<!-- knobs:end -->"
README = Path(__file__).resolve().parents[2] / "README.md"


def _default(k: Knob) -> str:
    v = k.default
    if k.parse is not None and k.parse.kind == "reasons":
        v = "all" if v == REASON_MASK_ALL else format_reason_mask(v)
    elif isinstance(v, bool):
        v = str(v).lower()
    return f"`{k.config} = {v}`"


def render() -> str:
    """The generated table (markers excluded)."""
    rows = ["| path | access | values | config | soak | meaning |", "|---|---|---|---|---|---|"]
    for k in all_knobs():
        path = k.path.format(k.slot) if k.each is not None else k.path
        access = {0o644: "rw", 0o444: "ro", 0o200: "wo"}[k.mode]
        values = k.parse.describe() if k.parse is not None else ""
        config = _default(k) if k.config else ""
        rows.append(f"| `{path}` | {access} | {values} | {config} | "
                    f"{'yes' if k.soak else ''} | {k.help} |")
    return "\n".join(rows) + "\n"


def _split(text: str) -> tuple[str, str, str]:
    if BEGIN + "\n" not in text or END not in text:
        raise ValueError(f"README has no {BEGIN} ... {END} markers")
    head, _, rest = text.partition(BEGIN + "\n")
    body, _, tail = rest.partition(END)
    return head, body, tail


def stale(readme: Path = README) -> bool:
    """Whether the README's table differs from :func:`render`."""
    return _split(readme.read_text())[1] != render()


def main(argv: list[str]) -> int:
    head, body, tail = _split(README.read_text())
    if "--check" in argv:
        if body != render():
            print(f"{README}: the knob table is stale; run python -m migd.daemon.reference",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(f"{head}{BEGIN}\n{render()}{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
