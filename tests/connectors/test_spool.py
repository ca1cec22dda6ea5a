"""The durable spool: order, per-sink cursors, byte bound, quarantine, and kill -9."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from machinewatch.engine import spool as spool_mod
from machinewatch.engine.errors import SpoolError
from machinewatch.engine.health import HealthSample
from machinewatch.engine.spool import (
    MIN_FREE_BYTES,
    WAL_PAGES,
    Spool,
    decode_record,
    disk_full,
    encode_record,
)
from machinewatch.engine.types import AlarmEvent, Summary

T0 = 1_700_000_000_000_000_000


def summ(i: int, asset: str = "pump1") -> Summary:
    return Summary(
        "s1",
        asset,
        T0 + i * 10**10,
        10.0,
        "NORMAL",
        {"score_max": float(i), "nan": math.nan},
        {"vib": {"rms_mean": i / 10, "windows": 3.0}},
    )


def test_records_round_trip_exactly() -> None:
    recs = [
        summ(3),
        AlarmEvent(
            "s1", "p", T0, "NORMAL", "ALARM", "why", score=2.0, threshold=1.0, top_features=("vib.rms", "x")
        ),
        HealthSample("s1", T0, {"spool_bytes": 1.0}),
    ]
    for r in recs:
        back = decode_record(*encode_record(r))
        assert type(back) is type(r)
        if isinstance(r, Summary):
            assert isinstance(back, Summary)
            assert math.isnan(back.fields["nan"])
            assert back.streams == r.streams and back.fields["score_max"] == 3.0
        else:
            assert back == r
    with pytest.raises(ValueError):
        decode_record("s", b'{"site": 1}')


def test_fifo_and_ack_per_sink(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["a", "b"])
    assert sp.put([summ(i) for i in range(10)]) == 10
    got = sp.peek("a", 4)
    assert [r.t_ns for _, r in got] == [T0 + i * 10**10 for i in range(4)]  # type: ignore[union-attr]
    sp.ack("a", got[-1][0])
    assert sp.pending("a") == 6 and sp.pending("b") == 10
    assert sp.stats().records == 10  # b has not written anything: nothing leaves
    sp.ack("b", got[1][0])
    assert sp.stats().records == 8
    sp.close()
    # reopened: cursors and records are where they were; a sink dropped from the config
    # releases what only it was holding
    sp = Spool(tmp_path / "s.db", ["a"])
    assert sp.pending("a") == 6 and sp.stats().records == 6
    assert [r.t_ns for _, r in sp.peek("a", 1)] == [T0 + 4 * 10**10]  # type: ignore[union-attr]
    with pytest.raises(SpoolError):
        sp.peek("nope", 1)
    sp.close()


def test_no_sinks_keeps_nothing(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", [])
    assert sp.put([summ(1)]) == 0 and sp.stats().records == 0 and sp.stats().dropped_overflow == 0
    sp.close()


def test_byte_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    limit = 20_000
    sp = Spool(tmp_path / "s.db", ["a"], max_bytes=limit)
    for i in range(300):
        sp.put([summ(i)])
    st = sp.stats()
    assert st.bytes <= limit
    assert st.dropped_overflow > 0
    assert st.records + st.dropped_overflow == 300
    ids = [r.t_ns for _, r in sp.peek("a", 10_000)]  # type: ignore[union-attr]
    # what is left is exactly the newest records, in order
    assert ids == [T0 + i * 10**10 for i in range(300 - st.records, 300)]
    sp.close()
    sp = Spool(tmp_path / "s.db", ["a"], max_bytes=limit)
    assert sp.stats().dropped_overflow == st.dropped_overflow  # the count survives a restart
    assert sp.stats().bytes == st.bytes
    sp.close()


def test_garbage_file_is_quarantined_and_spool_starts(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    p.write_bytes(b"this is not a database" * 500)
    sp = Spool(p, ["a"])
    assert sp.quarantined == 1 and sp.stats().records == 0
    assert len(list(tmp_path.glob("s.db.corrupt-*"))) == 1
    sp.put([summ(1)])
    assert sp.pending("a") == 1
    sp.close()


def test_damaged_pages_quarantined_good_records_kept(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    sp = Spool(p, ["a"])
    n = 2000
    for k in range(0, n, 100):
        sp.put([summ(i) for i in range(k, k + 100)])
    sp.ack("a", 5)  # the cursor is kept too
    sp.close()
    size = p.stat().st_size
    with p.open("r+b") as f:  # smash a few pages in the middle of the table
        f.seek(size // 2)
        f.write(os.urandom(4096 * 3))
    sp = Spool(p, ["a"])
    assert sp.quarantined == 1
    got = sp.peek("a", 10 * n)
    t = [r.t_ns for _, r in got]  # type: ignore[union-attr]
    assert 0 < len(got) < n - 5, len(got)
    assert t == sorted(t) and len(set(t)) == len(t)
    assert t[0] == T0 + 5 * 10**10  # the salvaged cursor: records 0..4 were acknowledged
    ok = sqlite3.connect(p).execute("PRAGMA quick_check").fetchone()
    assert ok == ("ok",)
    sp.put([summ(n)])
    assert sp.pending("a") == len(got) + 1
    sp.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from machinewatch.engine.spool import Spool
    from machinewatch.engine.types import Summary
    sp = Spool(sys.argv[1], ["a"])
    i = 0
    while True:
        sp.put([Summary("s", "m", 1_700_000_000_000_000_000 + i, 1.0, "NORMAL", {"i": float(i)})])
        print(i, flush=True)  # printed only after the fsync'ed commit returned
        i += 1
    """
)


def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(p)], stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 300:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    sp = Spool(p, ["a"])
    assert sp.quarantined == 0
    got = [int(r.fields["i"]) for _, r in sp.peek("a", 100_000)]  # type: ignore[union-attr]
    # every record whose commit returned is there, in order, once (the writer may have committed
    # more between our last read and the kill)
    assert len(got) >= acknowledged + 1
    assert got == list(range(len(got)))
    sp.close()


# ----------------------------------------------------------------------------- disk full


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (``mount`` needs root; skipped without)."""
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _ledger(sp: Spool, n_put: int) -> list[int]:
    ids = [r.t_ns for _, r in sp.peek("influx", 10**6) if isinstance(r, Summary)]
    st = sp.stats()
    assert st.records + st.dropped_overflow == n_put, "put = kept + dropped by the policy"
    idx = [(t - T0) // 10**10 for t in ids]
    assert idx == list(range(n_put - len(idx), n_put)), "the newest are kept, in order, without a hole"
    return idx


def test_disk_full_drops_the_oldest_and_keeps_the_newest(tiny_disk: Path) -> None:
    """The spool alone fills a 256 KiB disk: every put is stored, the oldest are dropped (counted)."""
    sp = Spool(tiny_disk / "spool.db", ["influx"])
    n = 1500
    for i in range(n):
        assert sp.put([summ(i)]) == 1
    kept = _ledger(sp, n)
    assert 50 < len(kept) < n
    # the WAL stays small: growth is in the file, whose freed pages are reused
    assert (tiny_disk / "spool.db-wal").stat().st_size <= 4 * WAL_PAGES * 4096
    sp.close()


def test_disk_filled_by_another_file(tiny_disk: Path) -> None:
    """A log file grows beside the spool until the disk is full: puts go on, oldest dropped."""
    sp = Spool(tiny_disk / "spool.db", ["influx"])
    for i in range(100):
        sp.put([summ(i)])
    fd = os.open(tiny_disk / "other.log", os.O_WRONLY | os.O_CREAT)
    full = 0
    try:
        for i in range(100, 1000):
            try:
                os.write(fd, b"x" * 2048)
            except OSError:
                full += 1
            assert sp.put([summ(i)]) == 1
    finally:
        os.close(fd)
    assert full > 100, "the other file did fill the disk"
    assert shutil.disk_usage(tiny_disk).free < 8192
    kept = _ledger(sp, 1000)
    assert len(kept) > 10
    sp.close()
    back = Spool(tiny_disk / "spool.db", ["influx"])  # reopens on the full disk, counts kept
    assert back.stats().dropped_overflow == 1000 - len(kept)
    back.close()


def _fill(path: Path) -> None:
    """Another writer takes every free byte at once (a model file written whole)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)


def _put_batches(sp: Spool, start: int, batches: int, size: int) -> int:
    for b in range(batches):
        assert sp.put([summ(start + b * size + k) for k in range(size)]) == size
    return start + batches * size


def test_disk_filled_at_once_releases_the_reserve(tiny_disk: Path) -> None:
    """The case that wedged the spool for good before the reserve: the file grew (in the WAL),
    then another file took the last byte; neither the checkpoint nor a drop could be written.

    Without the reserve 199 of these 200 puts were refused (also with 60 batches before the
    fill). Now the reserve is released once and every put is stored, the oldest dropped (counted).
    """
    sp = Spool(tiny_disk / "spool.db", ["influx"])
    reserve = tiny_disk / "spool.db.reserve"
    assert reserve.stat().st_size == MIN_FREE_BYTES // 2, "made at open"
    n = _put_batches(sp, 0, 30, 4)  # roomy: the file grows, the last frames still in the WAL
    _fill(tiny_disk / "model.json")
    assert shutil.disk_usage(tiny_disk).free == 0
    n = _put_batches(sp, n, 200, 4)
    assert sp.stats().reserve_released == 1
    assert not reserve.exists()
    kept = _ledger(sp, n)
    assert len(kept) >= 16, "what fits in the spool's own pages is kept"
    sp.close()


def test_reserve_is_made_again_from_the_oldest_records(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a release the spool drops its oldest records (counted) and shortens its file until
    the reserve fits again; the full disk stays full for everybody else."""
    monkeypatch.setattr(spool_mod, "REARM_S", 0.0)
    sp = Spool(tiny_disk / "spool.db", ["influx"])
    reserve = tiny_disk / "spool.db.reserve"
    n = _put_batches(sp, 0, 30, 4)  # roomy: the file grows, the last frames still in the WAL
    _fill(tiny_disk / "model.json")
    n = _put_batches(sp, n, 50, 4)
    assert sp.stats().reserve_released >= 1
    assert reserve.stat().st_size == MIN_FREE_BYTES // 2, "made again"
    _ledger(sp, n)
    # the disk filled again by someone else: every put still stored
    _fill(tiny_disk / "log.txt")
    n = _put_batches(sp, n, 50, 4)
    kept = _ledger(sp, n)
    assert len(kept) >= 4, "at least the newest batch"
    sp.close()


def test_put_larger_than_what_fits_keeps_its_newest(tiny_disk: Path) -> None:
    """Other files hold the disk and one put is larger than all the spool can free (a burst of
    summaries while a model was written; the e2e disk-full test hit it: 245 refused, then every
    put for 3 s). Its newest records are stored, its oldest counted as dropped like any other,
    and the puts after it are stored too; nothing is refused."""
    sp = Spool(tiny_disk / "spool.db", ["influx"])
    n = _put_batches(sp, 0, 10, 4)
    _fill(tiny_disk / "model.json")
    big = 400
    assert sp.put([summ(n + k) for k in range(big)]) == big  # in chunks, later ones push out earlier
    n += big
    kept = _ledger(sp, n)  # the newest, in order, without a hole; put = kept + dropped
    assert len(kept) >= 4
    n = _put_batches(sp, n, 20, 4)  # and the spool goes on: every later put stored
    assert len(_ledger(sp, n)) >= 4
    sp.close()


def test_large_put_on_a_nearly_full_disk_keeps_the_headroom(tiny_disk: Path) -> None:
    """The spool alone nearly fills its disk, then one put brings 400 records (a burst while the
    persist thread was busy). It is stored in small checkpointed transactions: the disk keeps
    free space beside the reserve and the WAL stays small. As one transaction it used the last
    free byte (0 B free, WAL 96 KiB on a 512 KiB disk): the checkpoint could then not be written
    once anything else wrote a file, and the e2e disk-full test saw every later put refused."""
    sp = Spool(tiny_disk / "spool.db", ["influx"])
    n = _put_batches(sp, 0, 400, 1)
    assert sp.stats().dropped_overflow > 0, "the drop policy is engaged: the disk is nearly full"
    big = 400
    assert sp.put([summ(n + k) for k in range(big)]) == big
    n += big
    assert (tiny_disk / "spool.db.reserve").exists()
    assert shutil.disk_usage(tiny_disk).free >= MIN_FREE_BYTES // 4, "headroom beside the reserve"
    assert (tiny_disk / "spool.db-wal").stat().st_size <= 2 * WAL_PAGES * 4096
    _fill(tiny_disk / "model.json")  # and then another writer takes the rest: nothing refused
    n = _put_batches(sp, n, 50, 4)
    assert len(_ledger(sp, n)) >= 4
    sp.close()


def test_no_reserve_when_the_headroom_is_off(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool.db", ["influx"], min_free_bytes=0)
    sp.put([summ(0)])
    assert not (tmp_path / "spool.db.reserve").exists()
    sp.close()


def test_disk_full_error_is_recognised() -> None:
    err = sqlite3.OperationalError("database or disk is full")
    assert disk_full(err)
    assert not disk_full(sqlite3.OperationalError("no such table: x"))
