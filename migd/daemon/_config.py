"""``etc/migd.toml``: loading and validation (stdlib tomllib).

The schema is data: each key has a type and a check.  Anything unknown or out
of range is refused at start with the key's dotted path and what was expected,
e.g. ``tenants[1].order: expected an integer 0..9, got 12``.  ``[migrator]`` and
its ``[migrator.<name>]`` tables are not written here: they are generated from
the knob table (``_knobs``), so a knob's range is the tree's and the config's.

Bounded before anything is allocated: at most 1 MiB is read, at most
MAX_NUMNODES nodes, each tenant fits its node, and the nodes together fit
mm's ``memory_limit`` of this machine.  Every refusal is one line (keys and
values that do not print are shown quoted and escaped, long ones cut).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hw import PROFILES, get_profile
from ..mm import MAX_FOLIO_ORDER, MAX_NUMNODES, memory_limit, parse_reason_mask
from ..offload import offload_migrators
from ._knobs import Knob, config_knobs

MiB = 1 << 20
#: The largest config read: a real one is a few KiB.  Past it the file is
#: refused after reading MAX_CONFIG_BYTES + 1 bytes (``--config /dev/zero`` grew
#: to 3.6 GB when the whole file was read first).
MAX_CONFIG_BYTES = 1 * MiB
#: PATH_MAX, with its terminating NUL: the longest path a mount point can be.
PATH_MAX = 4096


class ConfigError(ValueError):
    """A bad config file; the message names the file (when read from one) and the key."""


class _Refused(ValueError):
    """A value refused with its own words (``Key.expected()`` says the rest)."""


def _show(text: str, limit: int = 80) -> str:
    """``text`` as a one-line message shows it: as is if printable, else quoted
    and escaped; cut at ``limit`` characters."""
    shown = text if text.isprintable() else repr(text)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _shown_value(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return _show(repr(value))


def _fmt_size(n: int) -> str:
    """A config size as one is written: ``16M``, ``2G``."""
    return f"{n >> 30}G" if n % (1 << 30) == 0 else f"{n >> 20}M"


def _size(text: Any) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        raise ValueError
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(s[:-1] if mult > 1 else s) * mult


@dataclass(frozen=True)
class Key:
    kind: str  # "int", "float", "str", "path", "bool", "size", "choice", "reasons", "profile"
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "profile":
            return f"one of {', '.join(PROFILES)}, or a profile file"
        if self.kind == "size":
            return "a size such as 512M or 2G (a multiple of 2 MiB)"
        if self.kind == "path":
            return f"a path, not empty, without NUL, under {PATH_MAX} bytes (PATH_MAX)"
        if self.kind == "reasons":
            return "all, none, a number or comma-separated reason names"
        rng = f" {self.lo:g}..{self.hi:g}" if self.lo is not None else ""
        return {"int": "an integer", "float": "a number", "str": "a string",
                "bool": "true or false"}[self.kind] + rng

    def parse(self, value: Any) -> Any:
        k = self.kind
        if k == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if k == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError
        elif k == "float":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif k in ("str", "choice"):
            if not isinstance(value, str) or (k == "choice" and value not in self.choices):
                raise ValueError
            if "\0" in value:  # names go to paths, logs and labels; a NUL ends them in C
                raise _Refused("expected a string without NUL")
        elif k == "profile":
            if not isinstance(value, str):
                raise ValueError
            try:
                get_profile(value)  # a built-in name or a valid profile file
            except ValueError as e:  # a file's own error, else the names
                file = value.endswith(".toml") or "/" in value
                raise _Refused(str(e) if file else "expected " + self.expected()) from None
        elif k == "path":
            if (not isinstance(value, str) or not value or "\0" in value
                    or len(value.encode(errors="surrogateescape")) >= PATH_MAX):
                raise ValueError
        elif k == "size":
            value = _size(value)
            if value <= 0 or value % (2 * MiB):
                raise ValueError
        elif k == "reasons":
            if not isinstance(value, str):
                raise ValueError
            value = parse_reason_mask(value)  # the mask: validated once, applied as is
        if self.lo is not None and not self.lo <= value <= self.hi:
            raise ValueError
        return value


DAEMON = {
    "mount": Key("path", "/run/migd/sys"),
    "metrics": Key("str", "127.0.0.1:9464"),
    "log_format": Key("choice", "auto", choices=("auto", "json", "console")),
    "seed": Key("int", 0, 0, 2**32),
}
NODE = {
    "name": Key("str", "node"),
    "capacity": Key("size", 256 * MiB),
    "demotion_target": Key("int", -1, -1, 63),
}
TENANT = {
    "name": Key("str", "tenant"),
    "size": Key("size", 32 * MiB),
    "order": Key("int", 0, 0, MAX_FOLIO_ORDER),
    "home_node": Key("int", 0, 0, 63),
    "access_rate": Key("float", 1000.0, 0, 1e7),
    "write_fraction": Key("float", 0.25, 0, 1),
    "mlocked": Key("bool", False),
}


def _key(knob: Knob) -> Key:
    p = knob.parse
    if p.kind == "int":
        return Key("int", knob.default, p.lo, p.hi)
    if p.kind == "choice":
        return Key("choice", knob.default, choices=p.choices)
    return Key(p.kind, knob.default)


def migrator_schemas() -> dict[str, dict[str, Key]]:
    """``migrator`` and ``migrator.<name>`` tables: every config-keyed knob, the
    catalogue read now."""
    tables: dict[str, dict[str, Key]] = {"migrator": {}}
    tables.update({f"migrator.{e.name}": {} for e in offload_migrators()})
    for knob in config_knobs():
        table, key = knob.config.rsplit(".", 1)
        tables[table][key] = _key(knob)
    return tables


DMA = {
    "profile": Key("profile", "native"),
}
WORKLOAD = {
    "enabled": Key("bool", True),
    "interval": Key("float", 1.0, 0.001, 3600),
    "fraction": Key("float", 0.25, 0, 1),
}
WORKLOADS = ("move", "demotion", "promotion", "compaction", "damon", "fault")
#: Per-workload keys beyond WORKLOAD's: reclaim's LRU for demotion (the lists
#: it isolates differ: 32 pages classic, 64 MGLRU); DAMON off unless asked.
WORKLOAD_SCHEMAS = {
    "demotion": {**WORKLOAD, "lru": Key("choice", "classic", choices=("classic", "mglru"))},
    "damon": {**WORKLOAD, "enabled": Key("bool", False)},
    # tenants free and fault again this fraction of their folios per interval
    "fault": {**WORKLOAD, "interval": Key("float", 0.2, 0.001, 3600),
              "fraction": Key("float", 0.05, 0, 1)},
}


@dataclass
class Config:
    daemon: dict[str, Any]
    nodes: list[dict[str, Any]]
    tenants: list[dict[str, Any]]
    migrator: dict[str, Any]
    #: ``[migrator.<name>]`` of every catalogue migrator.
    migrators: dict[str, dict[str, Any]]
    dma: dict[str, Any]
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def knob_values(self) -> dict[str, Any]:
        """Validated knob values by their dotted config key (``migrator.<name>.auto``)."""
        out = {f"migrator.{k}": v for k, v in self.migrator.items()}
        for name, table in self.migrators.items():
            out.update({f"migrator.{name}.{k}": v for k, v in table.items()})
        return out


def _table(data: Any, schema: dict[str, Key], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    for key in data:
        if key not in schema:
            raise ConfigError(f"{where + '.' if where else ''}{_show(key)}: unknown key "
                              f"(expected one of {', '.join(schema)})")
    out = {}
    for key, spec in schema.items():
        if key not in data:
            out[key] = spec.default
            continue
        try:
            out[key] = spec.parse(data[key])
        except (ValueError, TypeError) as e:
            expected = e.args[0] if isinstance(e, _Refused) else f"expected {spec.expected()}"
            raise ConfigError(f"{where + '.' if where else ''}{key}: {expected}, "
                              f"got {_shown_value(data[key])}") from None
    return out


def read_config(path: str | Path) -> str:
    """The text of the config at ``path``: at most MAX_CONFIG_BYTES read, UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(e.strerror or str(e)) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES >> 20} MiB, the most a config may "
                          "be (a real one is a few KiB)")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset "
                          f"{e.start})") from None


def check_daemon_option(key: str, value: Any) -> Any:
    """A ``[daemon]`` value given on the command line (``--mount``), checked as
    the config checks it; ConfigError names the option."""
    spec = DAEMON[key]
    try:
        return spec.parse(value)
    except ValueError as e:
        expected = e.args[0] if isinstance(e, _Refused) else f"expected {spec.expected()}"
        raise ConfigError(f"--{key} {_show(str(value))}: {expected}") from None


def load_config(path: str | Path | None = None, text: str | None = None,
                mem_total: int | None = None) -> Config:
    """Parse and validate the file at ``path`` (or ``text``); ConfigError names
    the file, if any, and the offending key.  ``mem_total``: the machine's
    memory the nodes must fit (default: this one's MemTotal)."""
    try:
        return _parse(read_config(path) if text is None else text, mem_total)
    except ConfigError as e:
        if text is None:
            raise ConfigError(f"{_show(str(path), 200)}: {e}") from None
        raise


def _parse(text: str, mem_total: int | None) -> Config:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES >> 20} MiB, the most a config may be")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {_show(str(e), 200)}") from None
    except ValueError:  # int() past sys.get_int_max_str_digits()
        raise ConfigError("not valid TOML: a number with too many digits") from None
    except RecursionError:
        raise ConfigError("not valid TOML: arrays or tables nested too deeply") from None
    top = {"daemon", "nodes", "tenants", "migrator", "dma", "workloads"}
    for key in data:
        if key not in top:
            raise ConfigError(f"{_show(key)}: unknown key (expected one of "
                              f"{', '.join(sorted(top))})")
    schemas = migrator_schemas()
    mig = data.get("migrator", {})
    if not isinstance(mig, dict):
        raise ConfigError("migrator: expected a table")
    mig = dict(mig)
    subtables = {e.name: mig.pop(e.name, {}) for e in offload_migrators()}
    nodes = data.get("nodes", [{"name": "dram", "demotion_target": 1}, {"name": "far"}])
    tenants = data.get("tenants", [])
    for name, v in (("nodes", nodes), ("tenants", tenants)):
        if not isinstance(v, list):
            raise ConfigError(f"{name}: expected an array of tables ([[{name}]])")
    if not 0 < len(nodes) <= MAX_NUMNODES:
        raise ConfigError(f"nodes: expected 1..{MAX_NUMNODES} nodes (MAX_NUMNODES), "
                          f"got {len(nodes)}")
    cfg = Config(
        daemon=_table(data.get("daemon", {}), DAEMON, "daemon"),
        nodes=[_table(n, NODE, f"nodes[{i}]") for i, n in enumerate(nodes)],
        tenants=[_table(t, TENANT, f"tenants[{i}]") for i, t in enumerate(tenants)],
        migrator=_table(mig, schemas["migrator"], "migrator"),
        migrators={name: _table(t, schemas[f"migrator.{name}"], f"migrator.{name}")
                   for name, t in subtables.items()},
        dma=_table(data.get("dma", {}), DMA, "dma"),
    )
    wl = data.get("workloads", {})
    if not isinstance(wl, dict):
        raise ConfigError("workloads: expected a table")
    for key in wl:
        if key not in WORKLOADS:
            raise ConfigError(f"workloads.{_show(key)}: unknown workload "
                              f"(expected one of {', '.join(WORKLOADS)})")
    cfg.workloads = {w: _table(wl.get(w, {}), WORKLOAD_SCHEMAS.get(w, WORKLOAD), f"workloads.{w}")
                     for w in WORKLOADS}
    for i, n in enumerate(cfg.nodes):
        if n["demotion_target"] >= len(cfg.nodes) or n["demotion_target"] == i:
            raise ConfigError(f"nodes[{i}].demotion_target: expected another node's index "
                              f"0..{len(cfg.nodes) - 1} or -1, got {n['demotion_target']}")
    _check_memory(cfg, mem_total)
    return cfg


def _check_memory(cfg: Config, mem_total: int | None) -> None:
    """The nodes fit this machine (mm's ``memory_limit``) and each tenant fits
    what its node has left after the tenants before it: refused here, before
    the System allocates a byte.  Sizes are whole 2 MiB, so the buddy allocator
    places any set of tenants whose sizes add up to at most the capacity."""
    limit = memory_limit(mem_total)
    total = 0
    for i, n in enumerate(cfg.nodes):
        total += n["capacity"]
        if total > limit:
            what = (f"{_fmt_size(n['capacity'])} is" if i == 0 else
                    f"{_fmt_size(n['capacity'])} brings the nodes to {_fmt_size(total)},")
            raise ConfigError(f"nodes[{i}].capacity: {what} more than migd emulates on this "
                              f"machine ({limit / (1 << 30):.1f}G, half its memory)")
    free = [n["capacity"] for n in cfg.nodes]
    for i, t in enumerate(cfg.tenants):
        nid = t["home_node"]
        if nid >= len(cfg.nodes):
            raise ConfigError(f"tenants[{i}].home_node: expected a node index "
                              f"0..{len(cfg.nodes) - 1}, got {nid}")
        if t["size"] % (4096 << t["order"]):
            raise ConfigError(f"tenants[{i}].size: expected a multiple of the folio size")
        node = cfg.nodes[nid]
        size, cap = _fmt_size(t["size"]), _fmt_size(node["capacity"])
        if t["size"] > node["capacity"]:
            raise ConfigError(f"tenants[{i}].size: {size} is larger than its node{nid} "
                              f"({_show(node['name'])}, {cap})")
        if t["size"] > free[nid]:
            raise ConfigError(f"tenants[{i}].size: {size} does not fit in its node{nid} "
                              f"({_show(node['name'])}, {cap}): {_fmt_size(free[nid])} left by "
                              "the tenants before it")
        free[nid] -= t["size"]
