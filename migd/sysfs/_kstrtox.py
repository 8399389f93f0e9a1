"""How the kernel parses what is written to a sysfs file: lib/kstrtox.c.

Stores get the written bytes (``kernfs_fop_write_iter`` hands the attribute a
NUL-terminated copy: a NUL inside ends the string, as in C).  The rules, each
from the function named:

- ``_parse_integer_fixup_radix``: base 0 means ``0x``/``0X`` followed by a hex
  digit -> 16, a leading ``0`` -> 8, else 10; base 16 skips a ``0x`` prefix.
- ``_parse_integer``: digits 0-9, a-f (either case) below the base; overflow of
  64 bits is ERANGE (the digits after it are only counted, as
  ``_parse_integer_limit`` does, so parsing stays linear in the length).
- ``_kstrtoull``: at least one digit, then at most one ``\\n``, then the end.  So
  no leading or inner spaces, no second newline, no ``1\\n\\n``.
- ``kstrtoull``: one leading ``+``; ``kstrtoll``: one ``+`` or ``-``.
- ``kstrtobool``: only the first one or two characters count: ``y Y 1`` /
  ``n N 0`` / ``on`` / ``off`` (so ``yes`` and ``1junk`` are true, ``true`` is
  EINVAL, as the kernel's current code has it; the 2022-2023 ``t``/``f``
  spelling was removed again).

Every failure raises ``ValueError`` (the tree answers EINVAL: a sysfs store
returning -ERANGE reaches userspace as ERANGE, but migd's contract is EINVAL
for every invalid value, and "out of range" is already the knob's own check).
Python's ``int(text, 0)`` was rejected: it accepts spaces, ``_`` separators,
``0o``/``0b`` prefixes and unbounded values, all of which the kernel refuses.
"""

from __future__ import annotations

ULLONG_MAX = (1 << 64) - 1
LLONG_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1
UINT_MAX = (1 << 32) - 1

_HEX = b"0123456789abcdefABCDEF"


def _c_string(buf: bytes | str) -> bytes:
    if isinstance(buf, str):
        buf = buf.encode("utf-8")
    return buf.split(b"\0", 1)[0]


def _kstrtoull(s: bytes, base: int) -> int:
    """``_kstrtoull``: fixup radix, digits, one optional newline, end."""
    if base == 0:
        if s[:1] == b"0":
            base = 16 if s[1:2] in (b"x", b"X") and s[2:3] != b"" and s[2:3] in _HEX else 8
        else:
            base = 10
    if base == 16 and s[:1] == b"0" and s[1:2] in (b"x", b"X"):
        s = s[2:]
    res = 0
    i = 0
    for c in s:
        if 0x30 <= c <= 0x39:
            val = c - 0x30
        elif 0x61 <= (c | 0x20) <= 0x66:
            val = (c | 0x20) - 0x61 + 10
        else:
            break
        if val >= base:
            break
        if res <= ULLONG_MAX:  # past it, only count digits: linear in the length
            res = res * base + val
        i += 1
    if res > ULLONG_MAX:
        raise ValueError("numerical result out of range (ERANGE)")
    if i == 0:
        raise ValueError("no digits")
    rest = s[i:]
    if rest[:1] == b"\n":
        rest = rest[1:]
    if rest:
        raise ValueError(f"trailing characters {rest[:8]!r}")
    return res


def kstrtoull(buf: bytes | str, base: int = 0) -> int:
    s = _c_string(buf)
    if s[:1] == b"+":
        s = s[1:]
    return _kstrtoull(s, base)


def kstrtoul(buf: bytes | str, base: int = 0) -> int:
    """``kstrtoul`` (64-bit: ``unsigned long`` is ``unsigned long long``)."""
    return kstrtoull(buf, base)


def kstrtoll(buf: bytes | str, base: int = 0) -> int:
    s = _c_string(buf)
    if s[:1] == b"-":
        tmp = _kstrtoull(s[1:], base)
        if tmp > LLONG_MAX + 1:  # (long long)-tmp > 0
            raise ValueError("numerical result out of range (ERANGE)")
        return -tmp
    tmp = kstrtoull(s, base)
    if tmp > LLONG_MAX:
        raise ValueError("numerical result out of range (ERANGE)")
    return tmp


def kstrtoint(buf: bytes | str, base: int = 0) -> int:
    v = kstrtoll(buf, base)
    if not -INT_MAX - 1 <= v <= INT_MAX:
        raise ValueError("numerical result out of range (ERANGE)")
    return v


def kstrtouint(buf: bytes | str, base: int = 0) -> int:
    v = kstrtoull(buf, base)
    if v > UINT_MAX:
        raise ValueError("numerical result out of range (ERANGE)")
    return v


def kstrtobool(buf: bytes | str) -> bool:
    s = _c_string(buf)
    c = s[:1]
    if c in (b"y", b"Y", b"1"):
        return True
    if c in (b"n", b"N", b"0"):
        return False
    if c in (b"o", b"O"):
        if s[1:2] in (b"n", b"N"):
            return True
        if s[1:2] in (b"f", b"F"):
            return False
    raise ValueError("expected 1/0, y/n, on/off")
