"""lib/kstrtox.c's rules, as a table of inputs and what the kernel returns.

Each expectation is read off the kernel's code (cited per group), not computed
by migd: ``None`` is -EINVAL or -ERANGE (both EINVAL at the tree).
"""

from __future__ import annotations

import pytest

from migd.sysfs import kstrtobool, kstrtoint, kstrtoul

# kstrtoul(s, 0): _parse_integer_fixup_radix + _parse_integer + _kstrtoull.
KSTRTOUL_BASE0 = [
    (b"0", 0), (b"1", 1), (b"1\n", 1), (b"+1", 1), (b"42\n", 42),
    (b"010", 8),             # leading 0: octal
    (b"08", None),           # 8 is no octal digit: "8" left over
    (b"0x1f", 31), (b"0X1F\n", 31),
    (b"0x", None),           # 'x' not followed by a hex digit: octal "0", then "x"
    (b"0xg", None),
    (b"0x1g", None),
    (b"", None), (b"\n", None), (b"+", None), (b"-1", None), (b"++1", None), (b"+-1", None),
    (b" 1", None), (b"1 ", None), (b"1 2", None), (b"\t1", None),
    (b"1\n\n", None),        # one newline only
    (b"\n1", None), (b"1\r\n", None), (b"1_000", None), (b"0o7", None), (b"0b1", None),
    (b"1\x00junk", 1),       # the store's buffer is a C string
    (b"18446744073709551615", 2**64 - 1),
    (b"18446744073709551616", None),   # ERANGE
    (b"0xffffffffffffffff", 2**64 - 1), (b"0x10000000000000000", None),
    (b"\xd9\xa1", None),     # an Arabic-Indic digit is no digit to the kernel
]

# kstrtoint(s, 0): kstrtoll, then the int range (ERANGE outside).
KSTRTOINT_BASE0 = [
    (b"-1", -1), (b"-1\n", -1), (b"+5", 5), (b"-0", 0), (b"-0x10", -16), (b"-010", -8),
    (b"--1", None), (b"-+1", None), (b"- 1", None),
    (b"2147483647", 2**31 - 1), (b"2147483648", None),
    (b"-2147483648", -2**31), (b"-2147483649", None),
]

# kstrtobool: only s[0] (and s[1] after o/O) are looked at.
KSTRTOBOOL = [
    (b"1", True), (b"y", True), (b"Y", True), (b"yes", True), (b"1junk", True),
    (b"on", True), (b"ON", True), (b"oN\n", True),
    (b"0", False), (b"n", False), (b"N\n", False), (b"no", False), (b"off", False),
    (b"oF", False),
    (b"", None), (b"\n", None), (b"o", None), (b"ox", None), (b"true", None),
    (b"false", None), (b" 1", None), (b"2", None), (b"t", None), (b"f", None),
]


def _kernel(fn, s):
    try:
        return fn(s)
    except ValueError:
        return None


@pytest.mark.parametrize(("s", "want"), KSTRTOUL_BASE0)
def test_kstrtoul_base0(s, want):
    assert _kernel(lambda b: kstrtoul(b, 0), s) == want


@pytest.mark.parametrize(("s", "want"), KSTRTOINT_BASE0)
def test_kstrtoint_base0(s, want):
    assert _kernel(lambda b: kstrtoint(b, 0), s) == want


@pytest.mark.parametrize(("s", "want"), KSTRTOBOOL)
def test_kstrtobool(s, want):
    assert _kernel(kstrtobool, s) == want


def test_explicit_bases():
    # base 10: "0x10" is "0" then "x"; base 16 takes the prefix or not.
    assert _kernel(lambda b: kstrtoul(b, 10), b"0x10") is None
    assert _kernel(lambda b: kstrtoul(b, 10), b"010") == 10
    assert kstrtoul(b"0x10", 16) == 16 and kstrtoul(b"10", 16) == 16
    assert kstrtoul(b"777", 8) == 511 and _kernel(lambda b: kstrtoul(b, 8), b"8") is None
