"""Windows of alike streams share one kernel call, with the same features as one call per stream."""

from __future__ import annotations

import numpy as np

from machinewatch.engine.config import load_config_text
from machinewatch.engine.hotpath import HotPath
from machinewatch.engine.types import Window

BEARING = """
[assets.{a}.machine.bearing]
balls = {balls}
ball_diameter_mm = 7.94
pitch_diameter_mm = 39.04
"""


def config_text(bearings: dict[str, int]) -> str:
    text = '[engine]\nsite = "t"\n[sources.sim]\nkind = "simulator"\n'
    for a, balls in bearings.items():
        text += f"""
[assets.{a}]
primary_stream = "vib"
[assets.{a}.machine]
shaft_hz = {20 + len(text) % 13}  # a different speed per asset: per-row speeds
[assets.{a}.streams.vib]
kind = "vibration"
rate_hz = 25600
window_samples = 4096
hop_samples = 4096
[assets.{a}.streams.temp]
kind = "temperature"
rate_hz = 1
window_samples = 4
hop_samples = 4
""" + BEARING.format(a=a, balls=balls)
    return text


def windows(rng: np.random.Generator, sids: list[str], per_stream: int) -> list[Window]:
    out = []
    for k in range(per_stream):
        for sid in sids:
            n = 4 if sid.endswith("temp") else 4096
            v = rng.standard_normal(n).astype(np.float32)
            out.append(Window(sid, k * 10**9, (k + 1) * 10**9, 25600.0, v))
    return out


def test_alike_streams_share_a_call_with_the_same_features() -> None:
    cfg = load_config_text(config_text({"p1": 9, "p2": 9, "p3": 9, "odd": 8}))
    hot = HotPath(cfg)
    keys = hot._batch_keys
    assert keys["p1/vib"] == keys["p2/vib"] == keys["p3/vib"] != keys["odd/vib"]  # other bearing
    assert keys["p1/temp"] != keys["p2/temp"]  # scalar streams: one call each, as before
    calls: list[int] = []
    shared = hot.extractors["p1/vib"]
    real = shared.compute_batch
    shared.compute_batch = lambda x, s, o: calls.append(len(x)) or real(x, s, o)  # type: ignore[method-assign]
    rng = np.random.default_rng(5)
    sids = ["p1/vib", "odd/vib", "p2/temp", "p2/vib", "p3/vib", "p1/temp"]
    ws = windows(rng, sids, 3)
    ws[4].values[7] = np.nan  # a broken window in p2/vib (its first): flagged, the others computed
    ws[6].values[:] = 1.0  # p1/vib's second: a flat line
    res = hot.features(ws)
    assert calls == [7]  # 9 windows of p1, p2, p3: one call, without the two flagged ones
    assert [r.window for r in res] == ws
    assert res[4].flag == "nan" and res[4].features is None
    assert res[6].flag == "flatline" and res[6].features is None
    for r in res:  # every other window: the features of its own stream's extractor, to the bit
        if r.flag is not None:
            continue
        assert r.features is not None
        sid = r.window.stream_id
        ex = hot.extractors[sid]
        ref = np.empty(len(ex.names))
        assert ex.compute(r.window.values, hot.speed_hz[sid.partition("/")[0]], ref)
        np.testing.assert_allclose(r.features, ref, rtol=5e-6, atol=1e-9, err_msg=sid)
