"""The ``replay`` source: CSV (',' and ';'), .npy, .npz and .mat files, bad rows, options."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import io, signal

from machinewatch.connectors.base import Rejected
from machinewatch.connectors.sources.replay import ReplaySource, segments
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError, ConnectorError
from machinewatch.engine.types import Chunk

ASSETS = """
[assets.m1]
primary_stream = "vib"
[assets.m1.machine]
shaft_hz = 29.95
[assets.m1.streams.vib]
kind = "vibration"
rate_hz = 1000.0
window_samples = 64
[assets.m1.streams.cur]
kind = "current"
rate_hz = 1000.0
channels = 3
window_samples = 64
[assets.m1.streams.temp]
kind = "temperature"
rate_hz = 1.0
window_samples = 10
"""

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def toml_value(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\") + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def replay_text(files: list[dict[str, Any]], **opts: Any) -> str:
    opts = {"speedup": "max", "chunk_samples": 100, "start_ns": 5_000_000_000, **opts}
    out = '[sources.rp]\nkind = "replay"\n' + "".join(f"{k} = {toml_value(v)}\n" for k, v in opts.items())
    for f in files:
        out += "[[sources.rp.files]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in f.items())
    return out


def make(files: list[dict[str, Any]], **kw: Any) -> ReplaySource:
    clock = kw.pop("clock", None)
    sleep = kw.pop("sleep", None)
    cfg: Config = load_config_text(ASSETS + replay_text(files, **kw))
    extra = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
    return ReplaySource("rp", cfg.sources["rp"].options, cfg, **extra)


async def collect(src: ReplaySource) -> tuple[list[Chunk], list[Rejected]]:
    chunks: list[Chunk] = []
    rejected: list[Rejected] = []
    async for item in src.chunks():
        (rejected if isinstance(item, Rejected) else chunks).append(item)
    return chunks, rejected


def problems(files: list[dict[str, Any]], **kw: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        make(files, **kw)
    return {p.path: p.reason for p in exc.value.problems}


def assert_continuous(chunks: list[Chunk], channels: int = 1) -> None:
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for a, b in itertools.pairwise(chunks):
        assert b.t0_ns == pytest.approx(a.t0_ns + a.values.size // channels * 1e9 / a.rate_hz, abs=1)


# ------------------------------------------------------------------ CSV


@pytest.mark.parametrize("delim", [",", ";"])
async def test_csv_column_by_name_with_either_delimiter(tmp_path: Path, delim: str) -> None:
    x = np.sin(np.arange(450) * 0.1)
    lines = [delim.join(["idx", "acc", "other"])]
    lines += [delim.join([str(i), f"{v:.6f}", "7"]) for i, v in enumerate(x)]
    p = tmp_path / "vib.csv"
    p.write_text("\n".join(lines) + "\n")
    chunks, rejected = await collect(make([{"path": str(p), "stream": "m1/vib", "column": "acc"}]))
    assert rejected == []
    assert [c.values.size for c in chunks] == [100, 100, 100, 100, 50]
    assert all(c.stream_id == "m1/vib" and c.rate_hz == 1000.0 for c in chunks)
    assert chunks[0].t0_ns == 5_000_000_000
    assert_continuous(chunks)
    assert np.allclose(np.concatenate([c.values for c in chunks]), x, atol=1e-6)


async def test_csv_with_datetime_time_column_like_skab(tmp_path: Path) -> None:
    p = tmp_path / "skab.csv"
    rows = ["datetime;Accelerometer1RMS;Current;Temperature;anomaly"]
    for i in range(30):
        rows.append(f"2020-03-09 10:14:{i:02d};0.02;0.5;{60 + 0.1 * i:.2f};0.0")
    p.write_text("\n".join(rows) + "\n")
    src = make([{"path": str(p), "stream": "m1/temp", "column": "Temperature", "time_column": "datetime"}])
    chunks, rejected = await collect(src)
    assert rejected == []
    assert len(chunks) == 30 and all(c.values.size == 1 for c in chunks)
    assert all(c.rate_hz == pytest.approx(1.0) for c in chunks)
    assert [c.t0_ns - chunks[0].t0_ns for c in chunks] == [i * 1_000_000_000 for i in range(30)]
    assert chunks[-1].values[0] == pytest.approx(62.9)


async def test_time_gap_in_time_column_starts_a_new_chunk(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    t = np.r_[np.arange(150), np.arange(200, 260)] / 1000.0
    p.write_text("t,v\n" + "".join(f"{a:.4f},{i}\n" for i, a in enumerate(t)))
    chunks, _ = await collect(make([{"path": str(p), "stream": "m1/vib", "column": "v", "time_column": "t"}]))
    assert [c.values.size for c in chunks] == [100, 50, 60]
    assert chunks[2].t0_ns - chunks[0].t0_ns == 200_000_000
    assert [c.seq for c in chunks] == [0, 1, 2]


async def test_bad_rows_are_rejected_counted_and_skipped(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    vals = [str(i) for i in range(250)]
    vals[120] = "abc"
    vals[121] = ""
    vals[200] = "1e400x"
    p.write_text("v,w\n" + "\n".join(f"{v},0" for v in vals) + "\n")
    chunks, rejected = await collect(make([{"path": str(p), "stream": "m1/vib", "column": 0}]))
    assert len(rejected) == 3
    assert all(r.reason == "bad_row" and r.where == "m1/vib" for r in rejected)
    assert "bad.csv line 122" in rejected[0].detail and "abc" in rejected[0].detail
    assert "line 202" in rejected[2].detail
    got = np.concatenate([c.values for c in chunks])
    assert got.size == 247 and 120 not in got and 119 in got and 122 in got
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    # the chunk after the hole starts at the right time (two samples missing there)
    after = next(c for c in chunks if c.values[0] == 122)
    assert after.t0_ns == 5_000_000_000 + 122_000_000
    # a rejection comes out just before the data that follows it
    items: list[Any] = []
    async for item in make([{"path": str(p), "stream": "m1/vib", "column": 0}]).chunks():
        items.append(item)
    first_bad = next(i for i, it in enumerate(items) if isinstance(it, Rejected))
    assert items[first_bad + 2].values[0] == 122  # type: ignore[union-attr]


async def test_three_columns_feed_a_three_phase_stream_interleaved(tmp_path: Path) -> None:
    p = tmp_path / "cur.csv"
    p.write_text("a,b,c\n" + "".join(f"{i},{i + 0.1},{i + 0.2}\n" for i in range(10)))
    chunks, _ = await collect(make([{"path": str(p), "stream": "m1/cur", "columns": ["a", "b", "c"]}]))
    v = np.concatenate([c.values for c in chunks])
    assert v[:6].tolist() == pytest.approx([0, 0.1, 0.2, 1, 1.1, 1.2])
    assert v.size == 30


async def test_headerless_csv_and_explicit_delimiter(tmp_path: Path) -> None:
    p = tmp_path / "raw.txt"
    p.write_text("".join(f"{i}|{2 * i}\n" for i in range(5)))
    chunks, _ = await collect(make([{"path": str(p), "stream": "m1/vib", "column": 1, "delimiter": "|"}]))
    assert np.concatenate([c.values for c in chunks]).tolist() == [0, 2, 4, 6, 8]


# ------------------------------------------------------------------ NumPy and MATLAB


async def test_npy_with_decimation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000) + np.sin(2 * np.pi * 50 * np.arange(4000) / 4000)
    p = tmp_path / "x.npy"
    np.save(p, x)
    src = make([{"path": str(p), "stream": "m1/vib", "rate_hz": 4000.0, "decimate": 4}])
    chunks, _ = await collect(src)
    assert all(c.rate_hz == 1000.0 for c in chunks)
    got = np.concatenate([c.values for c in chunks])
    ref = signal.decimate(x, 4, zero_phase=True)
    assert got.size == 1000 and np.allclose(got, ref, atol=1e-5)
    assert_continuous(chunks)


async def test_npz_variable_and_2d_column(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, a=np.arange(10.0), b=np.arange(30.0).reshape(10, 3))
    one, _ = await collect(make([{"path": str(p), "stream": "m1/vib", "variable": "b", "column": 2}]))
    assert np.concatenate([c.values for c in one]).tolist() == list(np.arange(2.0, 30.0, 3.0))
    three, _ = await collect(make([{"path": str(p), "stream": "m1/cur", "variable": "b"}]))
    assert np.concatenate([c.values for c in three]).tolist() == list(np.arange(30.0))


async def test_mat_file_with_cwru_style_variable_suffix(tmp_path: Path) -> None:
    p = tmp_path / "cwru_like.mat"
    x = np.cos(np.arange(1234) * 0.05).reshape(-1, 1)
    io.savemat(p, {"X105_DE_time": x, "X105_FE_time": -x, "X105RPM": np.array([[1797]])})
    chunks, rejected = await collect(make([{"path": str(p), "stream": "m1/vib", "variable": "DE_time"}]))
    assert rejected == []
    assert np.allclose(np.concatenate([c.values for c in chunks]), x.ravel(), atol=1e-6)
    assert_continuous(chunks)
    # an ambiguous or absent name is a config error on "variable"
    assert "variable" in next(iter(problems([{"path": str(p), "stream": "m1/vib", "variable": "_time"}])))
    assert "sources.rp.files[0].variable" in problems([{"path": str(p), "stream": "m1/vib"}])


async def test_two_files_interleave_in_time_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.zeros(1500))
    np.save(b, np.ones(3))
    chunks, _ = await collect(
        make(
            [
                {"path": str(a), "stream": "m1/vib"},
                {"path": str(b), "stream": "m1/temp", "offset_s": 0.05},
            ]
        )
    )
    # a chunk goes out when its last sample is in: vib every 0.1 s, temp at 1.05, 2.05, 3.05 s
    order = [c.stream_id.split("/")[1] for c in chunks]
    assert order == ["vib"] * 10 + ["temp"] + ["vib"] * 5 + ["temp"] * 2
    temp = [c for c in chunks if c.stream_id == "m1/temp"]
    assert [c.t0_ns for c in temp] == [5_050_000_000, 6_050_000_000, 7_050_000_000]


# ------------------------------------------------------------------ pacing


async def test_replay_keeps_pace_with_speedup(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, np.zeros(2000))
    clock = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    src = make([{"path": str(p), "stream": "m1/vib"}], speedup=10.0, clock=lambda: clock[0], sleep=fake_sleep)
    chunks, _ = await collect(src)
    assert len(chunks) == 20 and len(sleeps) == 20
    assert clock[0] == pytest.approx(2.0 / 10.0)
    assert sleeps == pytest.approx([0.01] * 20)


def test_segments_split_on_gaps_and_backwards_time() -> None:
    t = np.array([0.0, 0.001, 0.002, 0.010, 0.011, 0.005, 0.006])
    assert segments(t, 1000.0) == [(0, 3), (3, 5), (5, 7)]
    assert segments(np.array([]), 1000.0) == []


# ------------------------------------------------------------------ errors


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "v.csv"
    p.write_text("acc\n1\n2\n")
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(10))
    probs = problems(
        [
            {"path": str(tmp_path / "missing.csv"), "stream": "m1/vib"},
            {"path": str(p), "stream": "m1/vib", "column": "nope"},
            {"path": str(p), "stream": "m1/ghost"},
            {"path": str(npy), "stream": "m1/vib", "rate_hz": 2000.0},
            {"path": str(p), "stream": "m1/vib", "time_column": "t"},
            {"path": str(tmp_path / "x.xlsx"), "stream": "m1/vib"},
        ]
    )
    assert "no such file" in probs["sources.rp.files[0].path"]
    assert "'nope' is not in the header" in probs["sources.rp.files[1].column"]
    assert "names no stream" in probs["sources.rp.files[2].stream"]
    assert "configured at 1000 Hz" in probs["sources.rp.files[3].rate_hz"]
    assert "sources.rp.files[4].time_column" in probs
    assert "unsupported file type" in probs["sources.rp.files[5].path"]


def test_validate_options_structure() -> None:
    cfg_probs = ReplaySource.validate_options(
        {
            "speedup": "fast",
            "files": [{"stream": "bad", "decimate": 0, "delimiter": ";;"}, 3],
            "chunk_samples": 0,
            "bogus": 1,
        },
        "sources.rp",
    )
    got = {p.path: p.reason for p in cfg_probs}
    assert set(got) == {
        "sources.rp.speedup",
        "sources.rp.chunk_samples",
        "sources.rp.bogus",
        "sources.rp.files[0].path",
        "sources.rp.files[0].stream",
        "sources.rp.files[0].decimate",
        "sources.rp.files[0].delimiter",
        "sources.rp.files[1]",
    }
    assert "is required" in ReplaySource.validate_options({}, "sources.rp")[0].reason


async def test_single_file_form(tmp_path: Path) -> None:
    p = tmp_path / "v.csv"
    p.write_text("acc\n1\n2\n3\n")
    text = (
        ASSETS
        + f"""
[sources.rp]
kind = "replay"
speedup = 0
path = "{p}"
stream = "m1/vib"
column = "acc"
"""
    )
    cfg = load_config_text(text)
    chunks, _ = await collect(ReplaySource("rp", cfg.sources["rp"].options, cfg))
    assert np.concatenate([c.values for c in chunks]).tolist() == [1, 2, 3]


async def test_file_that_breaks_after_start_up_is_a_connector_error(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, np.zeros(10))
    src = make([{"path": str(p), "stream": "m1/vib"}])
    p.write_bytes(b"not numpy")
    with pytest.raises(ConnectorError, match=r"x\.npy.*files\[0\]"):
        await collect(src)


async def test_short_segment_cannot_be_decimated(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text(
        "t,v\n"
        + "".join(f"{i / 4000:.6f},{i}\n" for i in range(20))
        + "".join(f"{(1000 + i) / 4000:.6f},{i}\n" for i in range(400))
    )
    chunks, rejected = await collect(
        make([{"path": str(p), "stream": "m1/vib", "column": "v", "time_column": "t", "decimate": 4}])
    )
    assert [r.reason for r in rejected] == ["short_segment"]
    assert sum(c.values.size for c in chunks) == 100


# ------------------------------------------------------------------ real data


@pytest.mark.data
async def test_cwru_normal_file_decimated_to_12k(tmp_path: Path) -> None:
    f = DATA / "cwru" / "normal_97_48k.mat"
    if not f.exists():
        pytest.skip(f"CWRU data not present at {f}")
    text = (
        """
[assets.b]
[assets.b.machine]
shaft_rpm = 1797
[assets.b.streams.vib]
kind = "vibration"
rate_hz = 12000
window_samples = 2048
"""
        + f"""
[sources.rp]
kind = "replay"
speedup = "max"
chunk_samples = 4096
[[sources.rp.files]]
path = "{f}"
stream = "b/vib"
variable = "DE_time"
decimate = 4
"""
    )
    cfg = load_config_text(text)
    chunks, rejected = await collect(ReplaySource("rp", cfg.sources["rp"].options, cfg))
    n = sum(c.values.size for c in chunks)
    assert rejected == [] and n == pytest.approx(243_938 / 4, abs=1)
    x = np.concatenate([c.values for c in chunks])
    assert 0.03 < float(np.std(x)) < 0.2  # the healthy record is ~0.07 g RMS
