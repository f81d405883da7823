"""An append-only on-disk spool of line-protocol batches, for while the sink is unavailable.

Batches go in with `append` and come out oldest first with `peek` + `ack`, across agent restarts.
On disk a spool is a directory of segment files (`<seq>.seg`, rotated at `segment_bytes`) and a
`cursor.json` naming the first batch not yet delivered. Each batch is one record:

    header  >III  payload length, number of lines, CRC-32 of the payload
    payload       the lines, UTF-8, joined by "\\n"

Why this shape: appends are one sequential write each (cheap during an outage); a crash can only
leave a torn record at the end of the newest segment, which opening detects by its length or CRC
and cuts off; and delivered segments are deleted whole, so the disk is clean after a replay.

Delivery is at-least-once across a crash (a batch written but not yet acked is written again
after a restart); InfluxDB stores a repeated point (same series, timestamp and fields) once, so
a replay never double-counts. Within one process it is exactly once.

The spool is bounded: when `max_bytes` of undelivered data are waiting, new batches are refused
and counted in `dropped_lines` (the oldest data, which covers the start of an outage, is kept).
It is used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

from loadorch.errors import InfrastructureError

_HEADER = struct.Struct(">III")
_SUFFIX = ".seg"
_CURSOR = "cursor.json"
_LOCK = "lock"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolCount(NamedTuple):
    """What a spool directory still holds for delivery."""

    batches: int
    lines: int


def count_pending(directory: Path) -> SpoolCount:
    """The batches and lines a `Spool` opened on `directory` would deliver, read without opening it.

    Read-only and lock-free, so it may look at the spool of an agent that still runs (then it is a
    snapshot) or of one that was killed. It counts exactly what `peek` would return: records from
    the cursor on whose length and CRC check out, per segment up to the first damaged record.
    """
    directory = Path(directory)
    try:
        seqs = sorted(int(p.stem) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
    except OSError:
        return SpoolCount(0, 0)
    cursor_seq, cursor_offset = _read_cursor(directory, seqs)
    batches = lines = 0
    for seq in seqs:
        if seq < cursor_seq:
            continue  # delivered; the agent died before deleting it
        start = cursor_offset if seq == cursor_seq else 0
        try:
            data = (directory / f"{seq:012d}{_SUFFIX}").read_bytes()
        except OSError:
            continue
        offset = start
        while offset + _HEADER.size <= len(data):
            length, count, crc = _HEADER.unpack_from(data, offset)
            payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc or payload.count(b"\n") + 1 != count:
                break  # a torn or damaged record: `peek` skips the rest of this segment too
            offset += _HEADER.size + length
            batches += 1
            lines += count
    return SpoolCount(batches, lines)


def _read_cursor(directory: Path, seqs: list[int]) -> tuple[int, int]:
    """The first undelivered (segment, offset); the oldest segment's start without a valid cursor."""
    first = seqs[0] if seqs else 1
    try:
        data = json.loads((directory / _CURSOR).read_text())
        seq, offset = int(data["segment"]), int(data["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        return first, 0
    if seqs and seq < first:
        return first, 0
    return seq, max(offset, 0)


class Spool:
    """FIFO of line-protocol batches on disk; see the module docstring for the format."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = False,
    ) -> None:
        """Open (or create) the spool in `directory`, recovering what a previous process left.

        `fsync=True` also survives a power loss, at the cost of one disk flush per batch; a crash of
        the agent alone never loses appended batches either way (they are in the OS page cache).
        """
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfrastructureError(
                f"cannot create the agent's spool directory: {exc}", where=str(self.directory)
            ) from exc
        self._lock: BinaryIO | None = self._take_lock()
        self.dropped_lines = 0
        self.dropped_batches = 0
        self.corrupt_records = 0  # records skipped because their bytes were damaged on disk
        self._last_error: str | None = None
        self._writer: BinaryIO | None = None
        self._reader: BinaryIO | None = None
        self._reader_seq = -1
        self._head: tuple[list[str], int] | None = None  # peeked batch and its record size
        self._sizes: dict[int, int] = {}  # segment seq -> bytes
        self._pending_lines = 0
        self._pending_batches = 0
        self._recover()

    # -- state -------------------------------------------------------------------------------

    @property
    def pending_batches(self) -> int:
        """Batches appended and not yet acknowledged."""
        return self._pending_batches

    @property
    def pending_lines(self) -> int:
        return self._pending_lines

    @property
    def pending_bytes(self) -> int:
        """Bytes of undelivered records (what `max_bytes` bounds)."""
        return sum(self._sizes.values()) - self._cursor_offset

    @property
    def last_error(self) -> str | None:
        """The last disk error an append hit (the batch was dropped), if any."""
        return self._last_error

    def __len__(self) -> int:
        """Undelivered batches, so `if spool:` asks whether anything is waiting."""
        return self._pending_batches

    # -- writing -----------------------------------------------------------------------------

    def append(self, lines: Sequence[str]) -> bool:
        """Add a batch at the end. False (and counted as dropped) if the spool is full."""
        if not lines:
            return True
        payload = "\n".join(lines).encode("utf-8")
        # count what a reader will split (a line holding "\n" is two lines, for InfluxDB too)
        count = payload.count(b"\n") + 1
        record = _HEADER.pack(len(payload), count, zlib.crc32(payload)) + payload
        if self.pending_bytes + len(record) > self.max_bytes:
            self.dropped_lines += len(lines)
            self.dropped_batches += 1
            return False
        seq = self._active_seq()
        if seq is None or (self._sizes[seq] > 0 and self._sizes[seq] + len(record) > self.segment_bytes):
            seq = self._new_segment()
        writer = self._writer_for(seq)
        try:
            writer.write(record)
            writer.flush()
            if self.fsync:
                os.fsync(writer.fileno())
        except OSError as exc:
            # A full or failing disk must not take the agent down: the batch is lost, and counted.
            self.dropped_lines += len(lines)
            self.dropped_batches += 1
            self._truncate_torn_tail(seq)
            self._last_error = str(exc)
            return False
        self._sizes[seq] += len(record)
        self._pending_lines += count
        self._pending_batches += 1
        return True

    # -- reading -----------------------------------------------------------------------------

    def peek(self) -> list[str] | None:
        """The oldest undelivered batch (the same one until `ack`), or None when empty."""
        if self._head is not None:
            return self._head[0]
        while self._pending_batches > 0:
            seq, offset = self._cursor_seq, self._cursor_offset
            size = self._sizes.get(seq)
            if size is None or offset >= size:
                if not self._advance_segment():
                    break
                continue
            reader = self._reader_for(seq)
            reader.seek(offset)
            header = reader.read(_HEADER.size)
            if len(header) == _HEADER.size:
                length, count, crc = _HEADER.unpack(header)
                payload = reader.read(length)
                if len(payload) == length and zlib.crc32(payload) == crc:
                    lines = payload.decode("utf-8").split("\n")
                    if len(lines) == count:
                        self._head = (lines, _HEADER.size + length)
                        return lines
            # Damaged bytes in the middle of the spool: the rest of this segment cannot be framed,
            # so skip to the next segment rather than stall the replay forever.
            self.corrupt_records += 1
            self._skip_rest_of_segment(seq)
        else:
            self._resync_if_empty()
            return None
        # the counts said something was pending but nothing could be read: trust the disk
        self._recount()
        return None if not self._pending_batches else self.peek()

    def ack(self) -> None:
        """The batch returned by `peek` was delivered (or dropped for good): move past it."""
        if self._head is None:
            raise RuntimeError("ack() without a batch from peek()")
        lines, size = self._head
        self._head = None
        self._pending_lines -= len(lines)
        self._pending_batches -= 1
        self._cursor_offset += size
        if self._cursor_offset >= self._sizes.get(self._cursor_seq, 0):
            self._advance_segment()
        self._save_cursor()
        self._resync_if_empty()

    def close(self) -> None:
        """Close the files and release the directory; everything undelivered stays for the next open."""
        for handle in (self._writer, self._reader, self._lock):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
        self._writer = self._reader = self._lock = None
        self._reader_seq = -1

    # -- internals ---------------------------------------------------------------------------

    def _take_lock(self) -> BinaryIO:
        """Two agents sharing one spool would interleave and corrupt it: allow one at a time."""
        handle = (self.directory / _LOCK).open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise InfrastructureError(
                "another process is using this spool directory",
                where=str(self.directory),
                fix="give each agent its own spool directory, or stop the other agent",
            ) from exc
        return handle

    def _segment_path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{_SUFFIX}"

    def _recover(self) -> None:
        seqs = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        cursor_seq, cursor_offset = self._load_cursor(seqs)
        for seq in seqs:
            if seq < cursor_seq:  # delivered, but the process died before deleting it
                self._segment_path(seq).unlink(missing_ok=True)
                continue
            self._sizes[seq] = self._segment_path(seq).stat().st_size
        self._cursor_seq = cursor_seq
        self._cursor_offset = cursor_offset if cursor_seq in self._sizes else 0
        # Count what is pending, and cut a torn record off the newest segment (a crash mid-append).
        for seq in sorted(self._sizes):
            start = self._cursor_offset if seq == self._cursor_seq else 0
            valid_end, batches, lines = self._scan(seq, start, verify=seq == max(self._sizes))
            if valid_end < self._sizes[seq]:
                if seq == max(self._sizes):
                    with self._segment_path(seq).open("r+b") as handle:
                        handle.truncate(valid_end)
                    self._sizes[seq] = valid_end
                else:
                    self.corrupt_records += 1
            self._pending_batches += batches
            self._pending_lines += lines
        self._resync_if_empty()

    def _scan(self, seq: int, start: int, *, verify: bool) -> tuple[int, int, int]:
        """Walk the records of a segment from `start`: (end of the last valid record, batches, lines)."""
        batches = lines = 0
        offset = start
        size = self._sizes[seq]
        with self._segment_path(seq).open("rb") as handle:
            handle.seek(start)
            while offset + _HEADER.size <= size:
                length, count, crc = _HEADER.unpack(handle.read(_HEADER.size))
                if offset + _HEADER.size + length > size:
                    break
                if verify:
                    if zlib.crc32(handle.read(length)) != crc:
                        break
                else:
                    handle.seek(length, os.SEEK_CUR)
                offset += _HEADER.size + length
                batches += 1
                lines += count
        return offset, batches, lines

    def _load_cursor(self, seqs: list[int]) -> tuple[int, int]:
        return _read_cursor(self.directory, seqs)

    def _save_cursor(self) -> None:
        path = self.directory / _CURSOR
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"segment": self._cursor_seq, "offset": self._cursor_offset}))
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new cursor, never half of one

    def _active_seq(self) -> int | None:
        return max(self._sizes) if self._sizes else None

    def _new_segment(self) -> int:
        seq = max(max(self._sizes, default=0), self._cursor_seq - 1) + 1
        self._segment_path(seq).touch()
        self._sizes[seq] = 0
        if not self._pending_batches and self._cursor_seq not in self._sizes:
            self._cursor_seq, self._cursor_offset = seq, 0
        return seq

    def _writer_for(self, seq: int) -> BinaryIO:
        if self._writer is None or self._writer.name != str(self._segment_path(seq)):
            if self._writer is not None:
                self._writer.close()
            self._writer = self._segment_path(seq).open("ab")
        return self._writer

    def _reader_for(self, seq: int) -> BinaryIO:
        if self._reader is None or self._reader_seq != seq:
            if self._reader is not None:
                self._reader.close()
            self._reader = self._segment_path(seq).open("rb")
            self._reader_seq = seq
        return self._reader

    def _advance_segment(self) -> bool:
        """Delete the fully read cursor segment and move to the next; False if there is none."""
        later = sorted(s for s in self._sizes if s > self._cursor_seq)
        if not later:
            return False
        self._drop_segment(self._cursor_seq)
        self._cursor_seq, self._cursor_offset = later[0], 0
        return True

    def _skip_rest_of_segment(self, seq: int) -> None:
        if not self._advance_segment():
            # the damaged segment is the newest: nothing after it can be framed either
            self._drop_segment(seq)
        self._save_cursor()
        self._recount()

    def _recount(self) -> None:
        """Recount the pending batches and lines from the disk (after skipping damaged records)."""
        self._pending_batches = self._pending_lines = 0
        for seq in sorted(self._sizes):
            start = self._cursor_offset if seq == self._cursor_seq else 0
            _, batches, lines = self._scan(seq, start, verify=False)
            self._pending_batches += batches
            self._pending_lines += lines
        self._resync_if_empty()

    def _drop_segment(self, seq: int) -> None:
        if self._reader_seq == seq and self._reader is not None:
            self._reader.close()
            self._reader, self._reader_seq = None, -1
        if self._writer is not None and self._writer.name == str(self._segment_path(seq)):
            self._writer.close()
            self._writer = None
        self._sizes.pop(seq, None)
        self._segment_path(seq).unlink(missing_ok=True)

    def _resync_if_empty(self) -> None:
        """Nothing pending: delete every segment so the spool directory is empty again."""
        if self._pending_batches or self._head is not None:
            return
        if not self._sizes:
            return
        next_seq = max(self._sizes) + 1
        for seq in list(self._sizes):
            self._drop_segment(seq)
        self._cursor_seq, self._cursor_offset = next_seq, 0
        self._save_cursor()

    def _truncate_torn_tail(self, seq: int) -> None:
        with contextlib.suppress(OSError):
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            with self._segment_path(seq).open("r+b") as handle:
                handle.truncate(self._sizes[seq])
