"""The agent's on-disk spool: FIFO order, survival across restarts, the size bound, damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadorch.agent.spool import Spool
from loadorch.errors import InfrastructureError


def batch(i: int, n: int = 3) -> list[str]:
    return [f"m,t=x f={i}.{j} {1700000000000 + i}" for j in range(n)]


def drain_all(spool: Spool) -> list[list[str]]:
    out = []
    while (head := spool.peek()) is not None:
        out.append(head)
        spool.ack()
    return out


def test_fifo_and_peek_returns_the_same_batch_until_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        assert spool.append(batch(i))
    assert len(spool) == 5 and spool.pending_lines == 15
    assert spool.peek() == batch(0)
    assert spool.peek() == batch(0)
    spool.ack()
    assert drain_all(spool) == [batch(i) for i in range(1, 5)]
    assert not spool and spool.pending_bytes == 0
    with pytest.raises(RuntimeError):
        spool.ack()


def test_order_is_preserved_across_restarts_and_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)  # a few batches per segment
    for i in range(20):
        spool.append(batch(i))
    assert len(list(tmp_path.glob("*.seg"))) > 3
    got = []
    for _ in range(7):
        got.append(spool.peek())
        spool.ack()
    spool.close()

    reopened = Spool(tmp_path, segment_bytes=300)
    assert len(reopened) == 13 and reopened.pending_lines == 39
    for i in range(20, 25):  # appended after the restart: behind the old ones
        reopened.append(batch(i))
    got += drain_all(reopened)
    assert got == [batch(i) for i in range(25)]
    reopened.close()

    # everything delivered: the next start finds nothing, and no segment files remain
    assert len(Spool(tmp_path)) == 0
    assert list(tmp_path.glob("*.seg")) == []


def test_a_peeked_but_unacked_batch_is_delivered_again_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(0))
    spool.append(batch(1))
    assert spool.peek() == batch(0)
    spool.close()  # crash before the sink confirmed the write
    assert drain_all(Spool(tmp_path)) == [batch(0), batch(1)]


def test_size_bound_drops_new_batches_and_counts_them(tmp_path: Path) -> None:
    record = len("\n".join(batch(0)).encode()) + 12
    spool = Spool(tmp_path, max_bytes=record * 3)
    assert all(spool.append(batch(i)) for i in range(3))
    assert not spool.append(batch(3))
    assert not spool.append(batch(4, n=2))
    assert (spool.dropped_lines, spool.dropped_batches) == (5, 2)
    assert spool.pending_bytes <= spool.max_bytes
    spool.peek()
    spool.ack()
    assert spool.append(batch(5))  # room again once something was delivered
    assert drain_all(spool) == [batch(1), batch(2), batch(5)]


def test_a_torn_last_record_is_cut_off_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(0))
    spool.append(batch(1))
    spool.close()
    segment = max(tmp_path.glob("*.seg"))
    with segment.open("ab") as handle:  # the agent died in the middle of an append
        handle.write(b"\x00\x00\x01\x00\x00\x00\x00\x03partial")
    reopened = Spool(tmp_path)
    assert len(reopened) == 2
    reopened.append(batch(2))
    assert drain_all(reopened) == [batch(0), batch(1), batch(2)]


def test_damage_in_the_middle_skips_the_rest_of_that_segment_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    for i in range(8):
        spool.append(batch(i))
    spool.close()
    first = min(tmp_path.glob("*.seg"))
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF  # flip a payload byte of the first record: its CRC no longer matches
    first.write_bytes(bytes(data))
    reopened = Spool(tmp_path, segment_bytes=300)
    got = drain_all(reopened)
    assert reopened.corrupt_records >= 1
    assert got and got == [batch(i) for i in range(8)][-len(got) :]  # the later segments, in order
    assert len(reopened) == 0


def test_one_spool_directory_serves_one_agent_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(InfrastructureError, match="another process"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()
