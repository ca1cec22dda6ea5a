"""Every InfluxQL query of every shipped Grafana dashboard runs against a real InfluxDB 1.x.

The database is fed the line protocol the sink sends (:func:`machinewatch.engine.lineprotocol.encode`)
for the demo line's assets, with the feature names the feature code gives each stream, and the
health metrics the engine reports, written by two gateways of a fleet (``gateway`` tag).
Grafana's macros and template variables are substituted the way Grafana does for a single
selected value. A query passes when it returns series and every
column it selects has at least one value: a misspelled field or tag returns no series or an
all-null column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from servers import InfluxDB1

from machinewatch.engine.config import load_config
from machinewatch.engine.features import feature_names
from machinewatch.engine.health import engine_metrics
from machinewatch.engine.lineprotocol import encode
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.spool import Spool
from machinewatch.engine.types import AlarmEvent, Summary

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "configs" / "grafana" / "dashboards").glob("*.json"))
DB = "machinewatch_dash"
T0 = 1_700_000_000_000_000_000
N = 30  # summary intervals of 10 s
SITE = "demo-line"
ASSET = "pump1"
#: the fleet: which gateway writes which demo asset (and its health samples)
GATEWAYS = {"pump1": "gw1", "fan1": "gw1", "compressor1": "gw2"}
GATEWAY = GATEWAYS[ASSET]
T_START, T_END = T0 - 60 * 10**9, T0 + (N + 6) * 10**10


def _queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for p in doc["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["query"]))
    for v in doc["templating"]["list"]:
        out.append((f"variable ${v['name']}", v["query"]))
    for a in doc["annotations"]["list"]:
        if "query" in a:
            out.append((f"annotation {a['name']!r}", a["query"]))
    return out


def substitute(q: str, site: str = SITE, gateway: str = GATEWAY) -> str:
    """Grafana's macros and variables for one selected value each."""
    return (
        q.replace("$timeFilter", f"time >= {T_START} AND time <= {T_END}")
        .replace("$__interval", "10s")
        .replace("$asset", re.escape(ASSET))
        .replace("$site", re.escape(site))
        .replace("$gateway", re.escape(gateway))
    )


def _dataset(tmp_path: Path) -> list[str]:
    cfg = load_config(ROOT / "configs" / "demo.toml")
    summaries, events = [], []
    for k in range(N):
        t = T0 + (k + 1) * 10**10
        for a in cfg.assets.values():
            streams = {}
            for s in a.streams.values():
                f: dict[str, float] = {}
                for i, name in enumerate(feature_names(s, a.machine)):
                    base = 1.0 + i + 0.01 * k
                    f |= {f"{name}_min": base - 0.5, f"{name}_mean": base, f"{name}_max": base + 0.5}
                f |= {"windows": 6.0, "dq_nan": float(k % 3 == 0), "dq_flatline": 0.0}
                streams[s.name] = f
            state = "ALARM" if a.name == ASSET and k >= 20 else "NORMAL"
            fields = {
                "score_min": 0.1,
                "score_mean": 0.2 + k / 10,
                "score_max": 0.5 + k / 10,
                "threshold": 2.5,
                "windows_scored": 6.0,
                "state_code": 2.0 if state == "ALARM" else 0.0,
            }
            summaries.append(Summary(SITE, a.name, t, 10.0, state, fields, streams))
    events.append(
        AlarmEvent(
            SITE,
            ASSET,
            T0 + 21 * 10**10,
            "NORMAL",
            "ALARM",
            "score 2.6 vs threshold 2.5",
            score=2.6,
            threshold=2.5,
            top_features=("vib.env_bpfo", "vib.kurtosis"),
        )
    )
    events.append(
        AlarmEvent(
            SITE, ASSET, T0 + 5 * 10**10, "NORMAL", "SENSOR_FAULT", "flat line", kind="quality", stream="temp"
        )
    )
    # health points with exactly the names the engine reports
    eng = Engine(cfg, install_signals=False)
    eng.spool = Spool(tmp_path / "spool.db", ["influx"])
    eng.counters.update(rejected_bad_frame=2, windows_shed=1)
    health: dict[str, list[tuple[str, int, dict[str, float]]]] = {gw: [] for gw in set(GATEWAYS.values())}
    for k in range(N):
        eng.counters["windows_scored"] += 60
        eng.counters["sink_write_errors"] += k % 2
        for samples in health.values():
            samples.append((SITE, T0 + (k + 1) * 10**10, engine_metrics(eng)))
    eng.spool.close()
    lines = []
    for gw, samples in health.items():  # each gateway writes its own assets and its own health
        enc = encode(
            [s for s in summaries if GATEWAYS[s.asset] == gw],
            [e for e in events if GATEWAYS[e.asset] == gw],
            samples,
            now_ns=T_END,
            tags={"gateway": gw},
        )
        assert enc.dropped_bad_time == 0 and enc.dropped_empty == 0
        lines += enc.lines
    return lines


@pytest.fixture(scope="module")
def fed(influxdb1: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> InfluxDB1:
    influxdb1.query(f'DROP DATABASE "{DB}"')
    influxdb1.create_database(DB)
    lines = _dataset(tmp_path_factory.mktemp("dash"))
    for i in range(0, len(lines), 2000):
        influxdb1.write(lines[i : i + 2000], DB)
    return influxdb1


def test_dashboards_are_there_and_use_the_provisioned_datasource() -> None:
    names = {p.name for p in DASHBOARDS}
    assert names == {"fleet-overview.json", "asset-detail.json", "engine-health.json"}
    prov = (ROOT / "configs" / "grafana" / "provisioning" / "datasources" / "machinewatch.yaml").read_text()
    assert "uid: machinewatch-influxdb" in prov and "version: InfluxQL" in prov
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids))
        for p in doc["panels"]:
            assert p["datasource"]["uid"] == "machinewatch-influxdb"
            assert all(
                t["rawQuery"] and t["datasource"]["uid"] == "machinewatch-influxdb" for t in p["targets"]
            )


def test_asset_detail_shows_what_the_issue_asks_for() -> None:
    doc = json.loads((ROOT / "configs/grafana/dashboards/asset-detail.json").read_text())
    text = json.dumps(doc)
    for field in (
        "rms_mean",
        "kurtosis_mean",
        "crest_mean",
        "env_bpfo_mean",
        "env_bpfi_mean",
        "rms_a_mean",
        "level_mean",
        "score_max",
        "threshold",
    ):
        assert f'\\"{field}\\"' in text, field
    assert any(v["name"] == "asset" for v in doc["templating"]["list"])
    assert any(a.get("query", "").startswith('SELECT "reason"') for a in doc["annotations"]["list"])


CASES = [(p, label, q) for p in DASHBOARDS for label, q in _queries(json.loads(p.read_text()))]


@pytest.mark.parametrize(("path", "label", "query"), CASES, ids=[f"{p.stem}:{lab}" for p, lab, _ in CASES])
def test_every_query_returns_its_series_and_fields(
    fed: InfluxDB1, path: Path, label: str, query: str
) -> None:
    q = substitute(query)
    res = fed.query(q, DB)[0]
    series = res.get("series", [])
    assert series, f"{label}: no series for {q}"
    if query.startswith("SHOW TAG VALUES"):
        values = {v[1] for s in series for v in s["values"]}
        assert ASSET in values or SITE in values or GATEWAY in values, values
        return
    for s in series:
        cols = s["columns"]
        for j, col in enumerate(cols):
            if col == "time":
                continue
            assert any(row[j] is not None for row in s["values"]), f"{label}: column {col!r} all null: {q}"
    if '"asset" =~ /^$asset$/' in query and "machinewatch_summary" in query and "GROUP BY" in query:
        assert all(s.get("tags", {}).get("stream") != "" for s in series)


def test_site_all_matches_every_site(fed: InfluxDB1) -> None:
    q = json.loads((ROOT / "configs/grafana/dashboards/fleet-overview.json").read_text())["panels"][0][
        "targets"
    ][0]
    rows = fed.points(substitute(q["query"], site=".*", gateway=".*").replace("\\.\\*", ".*"), DB)
    assert {r["asset"] for r in rows} == {"pump1", "fan1", "compressor1"}
    assert {r["asset"]: r["state"] for r in rows}["pump1"] == 2.0


def test_fleet_overview_shows_every_gateway(fed: InfluxDB1) -> None:
    doc = json.loads((ROOT / "configs/grafana/dashboards/fleet-overview.json").read_text())
    assert {"site", "gateway"} <= {v["name"] for v in doc["templating"]["list"]}
    panels = {p["title"]: p for p in doc["panels"]}
    every = ".*"  # Grafana's allValue for "All"

    def rows(title: str, ref: str = "A") -> list[dict[str, object]]:
        q = next(t["query"] for t in panels[title]["targets"] if t["refId"] == ref)
        return fed.points(substitute(q, site=every, gateway=every).replace("\\.\\*", ".*"), DB)

    table = rows("Gateways (latest health sample)")
    assert {r["gateway"] for r in table} == {"gw1", "gw2"}
    assert all(r["assets"] == 3.0 and r["uptime"] is not None for r in table)  # engine_metrics of the demo
    reporting = {r["gateway"]: r["reporting"] for r in rows("Assets per gateway", "B")}
    assert reporting == {"gw1": 2, "gw2": 1}
    rate = rows("Windows scored per second, by gateway")
    assert {r["gateway"] for r in rate} == {"gw1", "gw2"} and 6.0 in {r["windows/s"] for r in rate}
    # one gateway selected: only its assets
    q = panels["Asset state (now)"]["targets"][0]["query"]
    assets = {r["asset"] for r in fed.points(substitute(q, gateway="gw2"), DB)}
    assert assets == {"compressor1"}


def test_gateway_all_also_shows_points_written_before_fleets(fed: InfluxDB1) -> None:
    """Data from before the gateway tag existed still shows with the gateway variable on "All"."""
    old = encode([Summary("pre-fleet", "old1", T0 + 10**10, 10.0, "NORMAL", {"x": 1.0})], [], now_ns=T_END)
    db = DB + "_prefleet"  # apart from the shared data set
    fed.query(f'DROP DATABASE "{db}"')
    fed.create_database(db)
    fed.write(old.lines, db)
    doc = json.loads((ROOT / "configs/grafana/dashboards/fleet-overview.json").read_text())
    q = next(p for p in doc["panels"] if p["title"] == "Asset state (now)")["targets"][0]["query"]
    assert {
        r["asset"]
        for r in fed.points(substitute(q, site="pre-fleet", gateway=".*").replace("\\.\\*", ".*"), db)
    } == {"old1"}
