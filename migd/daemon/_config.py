"""``etc/migd.toml``: loading and validation (stdlib tomllib).

The schema is data: each key has a type and a check.  Anything unknown or out
of range is refused at start with the key's dotted path and what was expected,
e.g. ``tenants[1].order: expected an integer 0..9, got 12``.  ``[migrator]`` and
its ``[migrator.<name>]`` tables are not written here: they are generated from
the knob table (``_knobs``), so a knob's range is the tree's and the config's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hw import PROFILES
from ..mm import MAX_FOLIO_ORDER, parse_reason_mask
from ..offload import offload_migrators
from ._knobs import Knob, config_knobs

MiB = 1 << 20


class ConfigError(ValueError):
    """A bad config file; the message names the key."""


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
    kind: str  # "int", "float", "str", "bool", "size", "choice", "reasons"
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "size":
            return "a size such as 512M or 2G (a multiple of 2 MiB)"
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
    "mount": Key("str", "/run/migd/sys"),
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
    "profile": Key("choice", "native", choices=tuple(PROFILES)),
}
WORKLOAD = {
    "enabled": Key("bool", True),
    "interval": Key("float", 1.0, 0.001, 3600),
    "fraction": Key("float", 0.25, 0, 1),
}
WORKLOADS = ("move", "demotion", "promotion", "compaction", "damon")
#: Per-workload keys beyond WORKLOAD's: reclaim's LRU for demotion (the lists
#: it isolates differ: 32 pages classic, 64 MGLRU); DAMON off unless asked.
WORKLOAD_SCHEMAS = {
    "demotion": {**WORKLOAD, "lru": Key("choice", "classic", choices=("classic", "mglru"))},
    "damon": {**WORKLOAD, "enabled": Key("bool", False)},
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
            raise ConfigError(f"{where + '.' if where else ''}{key}: unknown key "
                              f"(expected one of {', '.join(schema)})")
    out = {}
    for key, spec in schema.items():
        if key not in data:
            out[key] = spec.default
            continue
        try:
            out[key] = spec.parse(data[key])
        except (ValueError, TypeError):
            raise ConfigError(f"{where + '.' if where else ''}{key}: expected {spec.expected()}, "
                              f"got {data[key]!r}") from None
    return out


def load_config(path: str | Path | None = None, text: str | None = None) -> Config:
    """Parse and validate; ConfigError names the offending key."""
    if text is None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path or 'config'}: not valid TOML: {e}") from None
    top = {"daemon", "nodes", "tenants", "migrator", "dma", "workloads"}
    for key in data:
        if key not in top:
            raise ConfigError(f"{key}: unknown key (expected one of {', '.join(sorted(top))})")
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
            raise ConfigError(f"workloads.{key}: unknown workload "
                              f"(expected one of {', '.join(WORKLOADS)})")
    cfg.workloads = {w: _table(wl.get(w, {}), WORKLOAD_SCHEMAS.get(w, WORKLOAD), f"workloads.{w}")
                     for w in WORKLOADS}
    if not cfg.nodes:
        raise ConfigError("nodes: at least one node is needed")
    for i, n in enumerate(cfg.nodes):
        if n["demotion_target"] >= len(cfg.nodes) or n["demotion_target"] == i:
            raise ConfigError(f"nodes[{i}].demotion_target: expected another node's index "
                              f"0..{len(cfg.nodes) - 1} or -1, got {n['demotion_target']}")
    for i, t in enumerate(cfg.tenants):
        if t["home_node"] >= len(cfg.nodes):
            raise ConfigError(f"tenants[{i}].home_node: expected a node index "
                              f"0..{len(cfg.nodes) - 1}, got {t['home_node']}")
        if t["size"] % (4096 << t["order"]):
            raise ConfigError(f"tenants[{i}].size: expected a multiple of the folio size")
    return cfg
