"""The example Docker stack (configs/deploy/) refers to files that exist and wires Grafana to
the shipped provisioning and dashboards. Docker cannot run here, so this checks references."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "configs" / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"


def _volumes(text: str) -> list[tuple[str, str]]:
    """``(host path, container path)`` of every bind mount (``- ./x:/y[:ro]``)."""
    out = []
    for m in re.finditer(r"^\s*-\s*(\.{1,2}/[^:\s]+):(/[^:\s]+)(?::ro|:rw)?\s*$", text, re.M):
        out.append((m.group(1), m.group(2)))
    return out


def test_every_bind_mount_exists() -> None:
    mounts = _volumes(COMPOSE.read_text())
    assert len(mounts) >= 5
    for host, _ in mounts:
        assert (DEPLOY / host).resolve().exists(), f"{host} does not exist"


def test_services_and_grafana_wiring() -> None:
    text = COMPOSE.read_text()
    for svc in ("mosquitto:", "influxdb:", "grafana:"):
        assert re.search(rf"^  {svc}", text, re.M), svc
    mounts = dict((c, h) for h, c in _volumes(text))
    prov = ROOT / "configs" / "grafana" / "provisioning"
    assert (DEPLOY / mounts["/etc/grafana/provisioning/datasources"]).resolve() == prov / "datasources"
    assert (DEPLOY / mounts["/etc/grafana/provisioning/dashboards"]).resolve() == prov / "dashboards"
    # the dashboard provider reads the folder the dashboards are mounted at
    provider = (prov / "dashboards" / "machinewatch.yaml").read_text()
    path = re.search(r"path:\s*(\S+)", provider)
    assert path and (DEPLOY / mounts[path.group(1)]).resolve() == ROOT / "configs" / "grafana" / "dashboards"
    # every variable the datasource needs is given to the Grafana container
    ds = (prov / "datasources" / "machinewatch.yaml").read_text()
    needed = set(re.findall(r"\$\{(\w+)\}", ds))
    assert needed == {"MACHINEWATCH_INFLUX_URL", "MACHINEWATCH_INFLUX_DB", "MACHINEWATCH_INFLUX_READ_TOKEN"}
    for var in needed:
        assert re.search(rf"^\s+{var}:", text, re.M), var
    # ports stay on loopback; no secret inline
    for port in re.findall(r'^\s*-\s*"([^"]+:\d+)"', text, re.M):
        assert port.startswith("127.0.0.1:"), port
    assert re.search(r"TOKEN:\s*\$\{", text) and "change-me" not in text


def test_env_example_names_every_required_variable() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (DEPLOY / "influx.env.example").read_text()
    assert required and all(re.search(rf"^{v}=", example, re.M) for v in required)


def test_influxdb_sample_config_uses_the_influxdb_sink() -> None:
    import tomllib

    cfg = tomllib.loads((ROOT / "configs" / "influxdb.toml").read_text())
    sink = cfg["sinks"]["influx"]
    assert sink["kind"] == "influxdb" and "token_env" in sink and "token" not in sink
