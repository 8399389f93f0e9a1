"""Profiles as data: TOML files of a profile's physical parameters.

A profile is ``name``, ``description``, ``source`` and two tables, ``[cpu]``
(``CpuModel``) and ``[dma]`` (``DmaModel``), every parameter with its unit in
the key's comment.  The built-ins ship as files in ``migd/hw/profiles/``;
``--profile`` takes a built-in name or a path to such a file, and ``migd
profile fit`` writes one.  Rejected: Python modules per profile (a platform
engineer's measurements would have to become code) and JSON (no comments,
so no units beside the numbers).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from pathlib import Path

from ._profile import CpuModel, DmaModel, HardwareProfile

#: A profile file is small; past this it is refused before it is parsed.
MAX_PROFILE_BYTES = 64 * 1024

#: Each parameter's unit and meaning, written beside it in a profile file.
DOCS: dict[str, dict[str, str]] = {
    "cpu": {
        "call_us": "us per move_pages() call: do_pages_move() set-up (lru_cache_disable())",
        "flush_us": "us per batch: try_to_unmap_flush(), one batched TLB flush",
        "unmap_folio_us": "us per folio: migrate_folio_unmap() (allocate, lock, try_to_migrate)",
        "move_folio_us": "us per folio: migrate_folio_move() without the copy",
        "pte_us": "us per 4 KiB page of a PTE-mapped folio (one PTE each), half in unmap, "
                  "half in move",
        "page_us": "us per 4 KiB page of struct-page work, half in unmap, half in move",
        "cold_folio_us": "us per folio among a call's first cold_folios, in its unmap and "
                         "again in its move (cold caches after the call's set-up)",
        "cold_folios": "folios at the start of a call that pay cold_folio_us",
        "copy_gbps": "GB/s of folio_mc_copy() on one CPU",
        "mt_dispatch_us": "us per batch of a multi-threaded copy: queue_work() and the wait",
        "membus_gbps": "GB/s ceiling shared by the CPU copy threads",
    },
    "dma": {
        "nr_channels": "DMA channels of the device",
        "channels_per_engine": "channels sharing one engine's bandwidth",
        "channels_per_device": "channels per DMA device (0: all on one)",
        "chan_gbps": "GB/s ceiling of one channel (0: its engine's share only)",
        "engine_gbps": "GB/s of one engine, shared by its busy channels",
        "membus_gbps": "GB/s ceiling shared by every busy channel",
        "desc_us": "us per descriptor on its channel",
        "iommu_page_us": "us per 4 KiB page below PMD size on the channel (IOMMU translation)",
        "iommu_run_pages": "pages of a folio at iommu_page_us; the rest at iommu_tail_us "
                           "(0: all)",
        "iommu_tail_us": "us per 4 KiB page past iommu_run_pages (IOMMU walk caches warm)",
        "iommu_walk_us": "us per mapped page per other busy channel (one shared IOMMU walker)",
        "submit_us": "us of CPU per descriptor: prep + submit",
        "chan_request_us": "us of CPU per channel per batch: request + release",
        "map_folio_us": "us of CPU per folio: dma_map_sgtable() of source and destination",
        "ring_size": "descriptors a channel's ring holds (0: unbounded)",
        "exclusive": "channels claimed per batch; all busy -> -EBUSY",
        "native": "no throttling: channels copy as fast as host threads can",
        "memcpy_sg": "the engine has DMA_MEMCPY_SG (scatter-gather memcpy transactions)",
        "memset": "the engine has DMA_MEMSET (clearing offload)",
        "iommu": "the engine maps through an IOMMU (dma_map_sgtable() merges entries by "
                 "length up to max_seg_bytes)",
        "max_seg_bytes": "bytes: dma_get_max_seg_size(), the longest merged segment",
        "find_channel": "channels from dma_find_channel(), shared, never claimed (else "
                        "dma_request_chan_by_mask())",
        "reports_errors": "descriptor callbacks carry a result (PTDMA: false, a failed "
                          "descriptor completes as a success)",
        "mark_chunks": "folios marked copied a ring's worth at a time (else all or nothing)",
    },
}


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file (and line)."""


def builtin_names() -> list[str]:
    """The profiles shipped with migd."""
    files = importlib.resources.files(__package__).joinpath("profiles")
    return sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".toml"))


def builtin_text(name: str) -> str:
    return importlib.resources.files(__package__).joinpath("profiles", f"{name}.toml").read_text()


def _line_of(text: str, section: str, key: str) -> int:
    """The line where ``key`` is set in ``[section]`` (0 when not found)."""
    current = ""
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("["):
            current = s.strip("[] ")
        elif current == section and s.split("=")[0].strip() == key:
            return i
    return 0


def parse_profile(text: str, where: str) -> HardwareProfile:
    """A profile from TOML ``text`` (``where`` names it in errors)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: {e}") from None
    for key in doc:
        if key not in ("name", "description", "source", "cpu", "dma"):
            raise ProfileError(f"{where}: unknown key {key!r} (expected name, description, "
                               "source, [cpu], [dma])")
    models = {}
    for section, cls in (("cpu", CpuModel), ("dma", DmaModel)):
        table = doc.get(section)
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: missing table [{section}]")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            line = _line_of(text, section, key)
            at = f"{where}:{line}" if line else where
            f = fields.get(key)
            if f is None:
                raise ProfileError(f"{at}: unknown parameter [{section}] {key!r}")
            kind = {"float": float, "int": int, "bool": bool}[str(f.type)]
            if kind is bool:
                ok = isinstance(value, bool)
            else:
                ok = (isinstance(value, int | float) and not isinstance(value, bool)
                      and value >= 0 and value == value and value != float("inf")
                      and (kind is float or float(value).is_integer()))
            if not ok:
                raise ProfileError(f"{at}: [{section}] {key} must be "
                                   f"{'true or false' if kind is bool else 'a number >= 0'}"
                                   f"{', a whole one' if kind is int else ''}, not {value!r}")
            values[key] = kind(value)
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                   and n not in values]
        if missing:
            raise ProfileError(f"{where}: [{section}] lacks {', '.join(missing)}")
        models[section] = cls(**values)
    if models["dma"].nr_channels < 1 or models["dma"].channels_per_engine < 1:
        raise ProfileError(f"{where}: [dma] nr_channels and channels_per_engine must be >= 1")
    positive = [("cpu", "copy_gbps"), ("cpu", "membus_gbps"), ("dma", "engine_gbps"),
                ("dma", "membus_gbps")]
    for section, key in positive:
        if getattr(models[section], key) <= 0:
            raise ProfileError(f"{where}: [{section}] {key} must be > 0")
    name = doc.get("name", Path(where).stem)
    return HardwareProfile(str(name), str(doc.get("description", "")), models["cpu"],
                           models["dma"], {"source": str(doc.get("source", ""))})


def load_profile(path: str | Path) -> HardwareProfile:
    """A profile file; refused in one line when unreadable, too large or malformed."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{p}: {size} bytes, a profile is at most {MAX_PROFILE_BYTES}")
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{p}: cannot read the profile: {getattr(e, 'strerror', e)}"
                           ) from None
    return parse_profile(text, str(p))


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return repr(float(f"{v:.6g}"))


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def dump_profile(profile: HardwareProfile, source: str | None = None) -> str:
    """``profile`` as a TOML file: every parameter with its unit and meaning."""
    out = [f"name = {_string(profile.name)}",
           f"description = {_string(profile.description)}",
           f"source = {_string(source if source is not None else profile.extra.get('source', ''))}"]
    for section in ("cpu", "dma"):
        model = getattr(profile, section)
        out += ["", f"[{section}]"]
        rows = [(f"{f.name} = {_value(getattr(model, f.name))}", DOCS[section].get(f.name, ""))
                for f in dataclasses.fields(model)]
        width = max(len(a) for a, _ in rows)
        out += [f"{a:<{width}}  # {b}" if b else a for a, b in rows]
    return "\n".join(out) + "\n"


def _builtins() -> dict[str, HardwareProfile]:
    return {n: parse_profile(builtin_text(n), f"migd/hw/profiles/{n}.toml")
            for n in builtin_names()}


#: The built-in profiles, by name (read from ``migd/hw/profiles/`` at import).
PROFILES: dict[str, HardwareProfile] = _builtins()


def get_profile(name: str) -> HardwareProfile:
    """A built-in profile by name, or a profile file by path (``--profile``)."""
    if name in PROFILES:
        return PROFILES[name]
    if name.endswith(".toml") or "/" in name or Path(name).is_file():
        return load_profile(name)
    raise ProfileError(f"unknown hardware profile {name!r} (expected one of "
                       f"{', '.join(PROFILES)}, or a profile file)")
