"""The native receive loop: socket to file at an offset, CRC'd, over a socket pair."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage_init import _recvfile as recvfile
from storage_init._crc import crc_algorithm
from storage_init.errors import LocalIOError
from storage_init.writer import WRITE_PIECE, TempFile

CHUNK = 64 * 1024
#: More than the 1 MiB pipe that splice goes through (``PIPE_BYTES``).
PAST_THE_PIPE = 3 * 1024 * 1024 + 12345


@pytest.fixture(params=[True, False], ids=["splice", "buffered"])
def splice(request: pytest.FixtureRequest) -> bool:
    """Each test runs both ways: socket -> pipe -> file, and through the buffer."""
    return bool(request.param)


def test_built() -> None:
    """The loop is built and finds its C library calls (bootstrap installs gcc);
    without it every plain-TCP body would quietly take the Python loop."""
    assert recvfile.available(), f"{recvfile.__name__}: the library or libc calls"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _send_later(sock: socket.socket, data: bytes, *, close: bool) -> threading.Thread:
    def send() -> None:
        sock.sendall(data)
        if close:
            sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.fixture
def open_file(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """``open_file(size)``: ``tmp_path / "f"`` of `size` bytes, open read-write;
    closed after the test."""
    fds: list[int] = []

    def open_(size: int) -> int:
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        fds.append(fd)
        os.ftruncate(fd, size)
        return fd

    yield open_
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize(
    "size", [1, CHUNK - 1, CHUNK, 3 * CHUNK + 12345, PAST_THE_PIPE]
)
def test_bytes_land_at_their_offset_with_their_crc(
    splice: bool, pair, tmp_path, size, open_file
) -> None:
    """The bytes are written from `offset` on and the CRC goes on from the old one."""
    crc = crc_algorithm("crc64nvme")
    head, data = b"already here", os.urandom(size)
    fd = open_file(len(head) + size)
    os.pwrite(fd, head, 0)
    run = recvfile.FileRun(
        tmp_path / "f", fd, len(head), 0, crc.update(head, 0), splice=splice
    )
    sender = _send_later(pair[1], data, close=False)
    buffer = bytearray(CHUNK)
    assert recvfile.receive_to_file(pair[0].fileno(), buffer, CHUNK, run, size)
    sender.join()
    assert run.received == size
    assert run.crc == crc.update(head + data, 0)
    assert os.pread(fd, len(head) + size, 0) == head + data


@pytest.mark.parametrize(
    ("have", "size"), [(5, 5), (100, CHUNK), (CHUNK, 2 * CHUNK + 7)]
)
def test_bytes_in_hand_go_first(
    splice: bool, pair, tmp_path, have, size, open_file
) -> None:
    """`have` bytes already in the buffer (the head's) are written and CRC'd
    first, and the first chunk is completed from the socket after them."""
    crc = crc_algorithm("crc64nvme")
    data = os.urandom(size)
    fd = open_file(size)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, 0, 0, splice=splice)
    buffer = bytearray(CHUNK)
    buffer[:have] = data[:have]
    sender = _send_later(pair[1], data[have:], close=False)
    assert recvfile.receive_to_file(
        pair[0].fileno(), buffer, CHUNK, run, size, have=have
    )
    sender.join()
    assert (run.received, run.crc) == (size, crc.update(data, 0))
    assert os.pread(fd, size, 0) == data


def test_bytes_in_hand_are_written_when_the_peer_closes(
    splice: bool, pair, tmp_path, open_file
) -> None:
    """A close right after the head: its bytes still land, and count."""
    fd = open_file(100)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, splice=splice)
    pair[1].shutdown(socket.SHUT_WR)
    buffer = bytearray(CHUNK)
    buffer[:10] = b"0123456789"
    assert not recvfile.receive_to_file(
        pair[0].fileno(), buffer, CHUNK, run, 100, have=10
    )
    assert run.received == 10
    assert os.pread(fd, 10, 0) == b"0123456789"


@pytest.mark.parametrize(
    ("have", "count"), [(CHUNK + 1, 2 * CHUNK), (11, 10), (-1, 10)]
)
def test_bytes_in_hand_must_fit(splice: bool, pair, tmp_path, have, count) -> None:
    run = recvfile.FileRun(tmp_path / "f", -1, 0, splice=splice)
    with pytest.raises(ValueError, match="in hand"):
        recvfile.receive_to_file(
            pair[0].fileno(),
            bytearray(2 * CHUNK),
            CHUNK,
            run,
            count,
            have=have,
        )


def test_no_crc_leaves_it_alone(splice: bool, pair, tmp_path, open_file) -> None:
    """Kind -1: the bytes are written, the CRC field is untouched."""
    fd = open_file(1000)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, -1, 42, splice=splice)
    _send_later(pair[1], b"x" * 1000, close=False).join()
    assert recvfile.receive_to_file(
        pair[0].fileno(), bytearray(CHUNK), CHUNK, run, 1000
    )
    assert (run.received, run.crc) == (1000, 42)


def test_stops_at_count(splice: bool, pair, tmp_path, open_file) -> None:
    """Bytes past `count` stay in the socket for the next reader."""
    fd = open_file(10)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, splice=splice)
    _send_later(pair[1], b"0123456789rest", close=False).join()
    assert recvfile.receive_to_file(pair[0].fileno(), bytearray(CHUNK), CHUNK, run, 10)
    assert pair[0].recv(100) == b"rest"


def test_peer_closing_early_reports_what_arrived(
    splice: bool, pair, tmp_path, open_file
) -> None:
    """A body cut short returns False; what arrived is written and counted."""
    crc = crc_algorithm("crc32c")
    data = os.urandom(CHUNK + 500)
    fd = open_file(2 * CHUNK)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, 1, 0, splice=splice)
    _send_later(pair[1], data, close=True).join()
    assert not recvfile.receive_to_file(
        pair[0].fileno(), bytearray(CHUNK), CHUNK, run, 2 * CHUNK
    )
    assert run.received == len(data)
    assert run.crc == crc.update(data, 0)
    assert os.pread(fd, len(data), 0) == data


def test_silence_times_out(splice: bool, pair, tmp_path, open_file) -> None:
    """SO_RCVTIMEO bounds each wait: a receive with no byte fails with EAGAIN."""
    timeval = struct.pack("@ll", 0, 200_000)
    pair[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    fd = open_file(100)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, splice=splice)
    _send_later(pair[1], b"y" * 10, close=False).join()
    started = time.monotonic()
    with pytest.raises(BlockingIOError):
        recvfile.receive_to_file(pair[0].fileno(), bytearray(CHUNK), CHUNK, run, 100)
    assert time.monotonic() - started < 5
    assert run.received == 10  # what came before the silence is kept


def test_write_failure_is_a_local_error(splice: bool, pair, tmp_path) -> None:
    """A failed write names the destination; the chunk it lost is not counted."""
    (tmp_path / "f").write_bytes(b"")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        run = recvfile.FileRun(tmp_path / "dest.bin", fd, 0, 0, 0, splice=splice)
        _send_later(pair[1], b"z" * 100, close=False).join()
        with pytest.raises(LocalIOError, match=r"dest\.bin"):
            recvfile.receive_to_file(
                pair[0].fileno(), bytearray(CHUNK), CHUNK, run, 100
            )
        assert (run.received, run.crc) == (0, 0)
    finally:
        os.close(fd)


def test_a_signal_does_not_break_the_receive(
    splice: bool, pair, tmp_path, open_file
) -> None:
    """A signal landing in the receiving thread (EINTR) is retried, as Python does."""
    got: list[object] = []
    fd = open_file(4 * WRITE_PIECE)
    data = os.urandom(4 * WRITE_PIECE)

    def receive() -> None:
        run = recvfile.FileRun(tmp_path / "f", fd, 0, 2, 0, splice=splice)
        try:
            got.append(
                recvfile.receive_to_file(
                    pair[0].fileno(),
                    bytearray(CHUNK),
                    CHUNK,
                    run,
                    len(data),
                )
            )
        except Exception as exc:  # noqa: BLE001 (reported below)
            got.append(exc)

    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        thread = threading.Thread(target=receive)
        thread.start()
        time.sleep(0.1)
        assert thread.ident is not None
        signal.pthread_kill(thread.ident, signal.SIGUSR1)
        time.sleep(0.1)
        pair[1].sendall(data)
        thread.join(10)
        assert got == [True]
        assert os.pread(fd, len(data), 0) == data
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_receivers_of_one_file_share_its_mutex(splice: bool, tmp_path) -> None:
    """Several threads write ranges of one file under its write mutex; all land."""
    temp = TempFile(tmp_path / "dest.bin", 8 * 3 * CHUNK)
    crc = crc_algorithm("crc64nvme")
    data = [os.urandom(3 * CHUNK) for _ in range(8)]
    pairs = [socket.socketpair() for _ in data]
    runs = [
        recvfile.FileRun(
            temp.final, temp.fd, i * 3 * CHUNK, 0, 0, 0, temp.write_mutex, splice=splice
        )
        for i in range(8)
    ]
    results: list[bool] = []

    def receive(i: int) -> None:
        results.append(
            recvfile.receive_to_file(
                pairs[i][0].fileno(),
                bytearray(CHUNK),
                CHUNK,
                runs[i],
                3 * CHUNK,
            )
        )

    try:
        threads = [threading.Thread(target=receive, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for (_, sender), chunk in zip(pairs, data, strict=True):
            sender.sendall(chunk)
        for thread in threads:
            thread.join(10)
        assert results == [True] * 8
        assert [run.crc for run in runs] == [crc.update(d, 0) for d in data]
        assert os.pread(temp.fd, 24 * CHUNK, 0) == b"".join(data)
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        temp.discard()


def test_buffer_smaller_than_a_chunk_is_refused(splice: bool, pair, tmp_path) -> None:
    run = recvfile.FileRun(tmp_path / "f", 0, 0, splice=splice)
    with pytest.raises(ValueError, match="smaller"):
        recvfile.receive_to_file(pair[0].fileno(), bytearray(10), CHUNK, run, 100)


def test_splice_keeps_the_bytes_out_of_the_buffer(pair, tmp_path, open_file) -> None:
    """With splice and no CRC the body never passes through the buffer: the path
    is really taken."""
    size = 3 * CHUNK + 5
    data = os.urandom(size)
    fd = open_file(size)
    run = recvfile.FileRun(tmp_path / "f", fd, 0, -1, splice=True)
    buffer = bytearray(CHUNK)
    sender = _send_later(pair[1], data, close=False)
    assert recvfile.receive_to_file(pair[0].fileno(), buffer, CHUNK, run, size)
    sender.join()
    assert buffer == bytearray(CHUNK)
    assert os.pread(fd, size, 0) == data


def test_a_file_that_cannot_splice_is_written_through_the_buffer(
    pair, tmp_path
) -> None:
    """splice(2) refuses a file open to append (EINVAL), as file systems without
    splice_write do: the bytes then go through the buffer, none lost."""
    size = 2 * CHUNK + 99
    data = os.urandom(size)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        run = recvfile.FileRun(tmp_path / "f", fd, 0, -1, 0, splice=True)
        buffer = bytearray(CHUNK)
        buffer[:7] = data[:7]
        sender = _send_later(pair[1], data[7:], close=False)
        assert recvfile.receive_to_file(
            pair[0].fileno(), buffer, CHUNK, run, size, have=7
        )
        sender.join()
        assert run.received == size
        assert (tmp_path / "f").read_bytes() == data
    finally:
        os.close(fd)
