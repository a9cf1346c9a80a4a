/*
 * The receive loop of a plain-TCP body: socket -> buffer -> CRC -> file, in C.
 *
 * A worker thread receiving a large body in Python ran, per 256 KiB chunk, a
 * receive, eight 32 KiB pwrites and a CRC call, each releasing and retaking the
 * GIL with seven other threads waiting for it: about 0.3 CPU-seconds of user time
 * per 2 GiB beyond the work itself. Here one call receives a whole run of the
 * body (up to a segment's end) with the GIL released once. The bytes are the same
 * and take the same path: the kernel copies them into the caller's buffer
 * (`chunk` bytes at a time, MSG_WAITALL), they are written at their offset in
 * `piece`-byte pwrites (see writer.WRITE_PIECE for why pieces), then CRC'd.
 *
 * Freestanding like the other kernels: libc's recv, send, pwrite, errno location and
 * pthread mutex calls are passed in (`struct io`), so the library still links
 * against nothing.
 *
 * With `splice` set, a body with no CRC to compute (`which` -1: one checked by
 * an MD5 read back from the file, or not checked) does not pass through the
 * buffer at all: socket -> pipe -> file by splice(2), one copy in the kernel
 * where receiving and writing make two, through user space. Whether that is
 * cheaper depends on the machine, so the caller decides (TransferConfig.splice,
 * off by default): the 2 x 1 GiB model with MD5 ETags, by hand
 * (benchmarks.alternate), took 1.19 s of system time against 1.62 buffered on
 * an AMD EPYC (5 rounds), but 1.33-2.32 s against 1.05-1.21 on an Intel Xeon
 * with AVX-512 (six sets of 6-12 rounds). A body with a CRC is received as
 * before: the CRC must see the bytes, and reading them back from the page cache
 * (pread, chunk by chunk) cost what the splice saved (4 rounds: 2.14 CPU s
 * against 2.18). A socket or a file that cannot splice (EINVAL: a file system
 * without splice_write, a file opened to append) makes the loop go on the
 * buffered way, losing no byte.
 *
 * ABI:
 *   int recv_to_file(const struct io *io, int sock, uint8_t *buf, size_t chunk,
 *                    size_t have, int fd, int64_t offset, uint64_t count,
 *                    size_t piece, int which, uint64_t state[3], void *mutex,
 *                    int splice);
 *   splice: move a body without a CRC (which -1) by splice(2) (above); 0: never.
 *   have: bytes of the run already in buf (those that came with the response's
 *     head), at most chunk and count: the first chunk is completed after them.
 *     A small body is then one call, not a Python read and its writes.
 *   which: the CRC (as crc_update), or -1 for none.
 *   mutex: a pthread mutex held around each chunk's writes (NULL: none). The
 *     threads writing one file share one: ext4 serialises a file's writes on its
 *     inode lock anyway, and its waiters spin, burning CPU the server needs
 *     (~18 % of the CPU of 8 ranges of one 4 GiB file, perf); this one's sleep.
 *   state: [0] bytes received, written and CRC'd so far, [1] the running CRC,
 *     [2] the errno of a failure. The caller sets [0] and [1] before the call
 *     (0 and the CRC of the bytes before); they are right whatever the outcome.
 *   Returns 0 once `count` bytes are done, 1 if the peer closed the connection
 *   first, -1 if a receive failed (state[2]: recv's errno, EAGAIN after
 *   SO_RCVTIMEO), -2 if a write failed (pwrite's errno; EIO for a write of 0
 *   bytes). The bytes of a failed chunk are not counted: a retry fetches them.
 *
 * A small file's whole GET is one call too (`get_to_file`): send the request,
 * receive the head, check it frames a plain body of the expected size, then the
 * loop above. Per small file the Python way was a send, one receive or more for
 * the head, the native loop, each releasing and retaking the GIL, and the
 * Python between them; the head is parsed again by Python afterwards (its
 * fields are the backend's to judge), this only checks the framing.
 *
 *   int get_to_file(const struct io *io, int sock, const uint8_t *request,
 *                   size_t request_len, uint8_t *head, size_t head_size,
 *                   const char *names, const int *kinds, uint8_t *buf,
 *                   size_t chunk, int fd, uint64_t size, size_t piece,
 *                   uint64_t state[5]);
 *   head: receives the response's head (and the body bytes that come with it,
 *     written from there); a head longer than head_size is "not plain".
 *   names, kinds: checksum fields (lower case, each NUL-terminated, an empty
 *     name last) and the CRC each says to compute (as crc_update). The first
 *     of them the head holds decides; with none, the CRC is the one kinds
 *     holds after theirs (-1: none).
 *   state: [0] body bytes written and CRC'd, [1] the CRC (0 before the call),
 *     [2] the errno of a failure, [3] bytes of head received, then the head's
 *     length (blank line included) once it is whole, [4] the CRC computed (-1:
 *     none; a two's-complement u64).
 *   Returns as recv_to_file (0 all `size` bytes are in the file; 1 the peer
 *   closed, before the head's first byte if state[3] is 0; -1 a send or receive
 *   failed; -2 a write failed), or 2: the response is not a 200 whose one
 *   Content-Length is `size` without a Transfer-Encoding (or its head is too
 *   long); nothing was written and the connection is not to be reused.
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT64_TYPE__ u64;
typedef __INT64_TYPE__ i64;
typedef __SIZE_TYPE__ size_t;
typedef long ssize_t;

struct io {
    ssize_t (*recv)(int fd, void *buf, size_t n, int flags);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, i64 offset);
    int *(*errno_location)(void);
    int (*lock)(void *mutex);
    int (*unlock)(void *mutex);
    ssize_t (*send)(int fd, const void *buf, size_t n, int flags);
    ssize_t (*splice)(int in, i64 *in_offset, int out, i64 *out_offset, size_t n,
                      unsigned flags);
    int (*pipe2)(int fds[2], int flags);
    int (*fcntl)(int fd, int cmd, ...);
    int (*close)(int fd);
    ssize_t (*read)(int fd, void *buf, size_t n);
};

u64 crc_update(int which, const u8 *data, size_t n, u64 crc);

#define MSG_WAITALL 0x100
#define MSG_NOSIGNAL 0x4000
#define EINTR 4
#define EIO 5
#define EINVAL 22
#define O_CLOEXEC 02000000
#define F_SETPIPE_SZ 1031
/* 1 MiB: /proc/sys/fs/pipe-max-size by default, the most an unprivileged process
 * may ask for. Against a chunk's 256 KiB (the pipe's size before), the MD5 model
 * (2 GiB by splice) took 0.08-0.19 s less system time and 3.28 s against 3.40 of
 * wall (by hand, benchmarks.alternate: two sets, 5 and 8 rounds; s5cmd 3.41). */
#define PIPE_BYTES (1 << 20)
#define SPLICE_F_MOVE 1

/* Write n bytes of data at offset, `piece` bytes per pwrite at most; 0 or an errno. */
static int write_all(const struct io *io, int fd, const u8 *data, size_t n,
                     i64 offset, size_t piece) {
    for (size_t done = 0; done < n;) {
        size_t want = n - done < piece ? n - done : piece;
        ssize_t wrote = io->pwrite(fd, data + done, want, offset + (i64)done);
        if (wrote <= 0) {
            int error = wrote < 0 ? *io->errno_location() : EIO;
            if (error == EINTR) continue;
            return error;
        }
        done += (size_t)wrote;
    }
    return 0;
}

/* write_all under the file's mutex (NULL: none); 0, or -2 with state[2] the errno. */
static int write_chunk(const struct io *io, int fd, const u8 *data, size_t n,
                       i64 offset, size_t piece, void *mutex, u64 state[3]) {
    if (mutex) io->lock(mutex);
    int error = write_all(io, fd, data, n, offset, piece);
    if (mutex) io->unlock(mutex);
    if (!error) return 0;
    state[2] = (u64)error;
    return -2;
}

/* Move n bytes from the pipe to the file at `at`. Where the file cannot take a
 * splice (EINVAL), the rest are read into buf (chunk bytes) and written from
 * there, and *buffered is set. 0 or an errno. */
static int pipe_to_file(const struct io *io, int pipe_in, int fd, i64 at, size_t n,
                        u8 *buf, size_t chunk, size_t piece, int *buffered) {
    size_t moved = 0;
    while (moved < n && !*buffered) {
        i64 pos = at + (i64)moved;
        ssize_t m = io->splice(pipe_in, 0, fd, &pos, n - moved, SPLICE_F_MOVE);
        if (m > 0) {
            moved += (size_t)m;
            continue;
        }
        int error = m < 0 ? *io->errno_location() : EIO;
        if (error == EINTR) continue;
        if (error != EINVAL) return error;
        *buffered = 1;
    }
    while (moved < n) {
        size_t want = n - moved < chunk ? n - moved : chunk;
        ssize_t r = io->read(pipe_in, buf, want);
        if (r <= 0) {
            int error = r < 0 ? *io->errno_location() : EIO;
            if (error == EINTR) continue;
            return error;
        }
        int error = write_all(io, fd, buf, (size_t)r, at + (i64)moved, piece);
        if (error) return error;
        moved += (size_t)r;
    }
    return 0;
}

/* recv_to_file's loop by splice, from state[0] on, for a body with no CRC to
 * compute. Returns as recv_to_file, or 3: the rest is for the buffered loop (a
 * socket or file that cannot splice, or no pipe to be had). */
static int splice_to_file(const struct io *io, int sock, u8 *buf, size_t chunk,
                          int fd, i64 offset, u64 count, size_t piece, u64 state[3],
                          void *mutex) {
    int pipe[2];
    if (io->pipe2(pipe, O_CLOEXEC) < 0) return 3;
    /* The bigger the pipe, the more each pair of splices moves: PIPE_BYTES where
     * the system lets us, else a chunk's worth, else the default 64 KiB. The pipe
     * holds the socket's pages, not copies (kernel memory, not the RSS). */
    int room = io->fcntl(pipe[1], F_SETPIPE_SZ, PIPE_BYTES);
    if (room <= 0) room = io->fcntl(pipe[1], F_SETPIPE_SZ, (int)chunk);
    size_t most = room > 0 ? (size_t)room : 65536;
    int status = 0, buffered = 0;
    while (state[0] < count && !buffered) {
        u64 left = count - state[0];
        size_t want = left < most ? (size_t)left : most;
        ssize_t n = io->splice(sock, 0, pipe[1], 0, want, SPLICE_F_MOVE);
        if (n < 0) {
            int error = *io->errno_location();
            if (error == EINTR) continue;
            if (error == EINVAL) {
                status = 3; /* nothing was taken from the socket */
                break;
            }
            state[2] = (u64)error;
            status = -1;
            break;
        }
        if (n == 0) {
            status = 1;
            break;
        }
        if (mutex) io->lock(mutex);
        int error = pipe_to_file(io, pipe[0], fd, offset + (i64)state[0], (size_t)n,
                                 buf, chunk, piece, &buffered);
        if (mutex) io->unlock(mutex);
        if (error) {
            state[2] = (u64)error;
            status = -2;
            break;
        }
        state[0] += (u64)n;
    }
    if (buffered && !status && state[0] < count) status = 3;
    io->close(pipe[0]);
    io->close(pipe[1]);
    return status;
}

int recv_to_file(const struct io *io, int sock, u8 *buf, size_t chunk,
                 size_t have, int fd, i64 offset, u64 count, size_t piece,
                 int which, u64 state[3], void *mutex, int splice) {
    size_t got = have;
    if (splice && which < 0 && count - state[0] > have) {
        /* The bytes in hand first, from the buffer; then the rest by splice. */
        if (have) {
            if (write_chunk(io, fd, buf, have, offset + (i64)state[0], piece, mutex,
                            state))
                return -2;
            state[0] += (u64)have;
            got = 0;
        }
        int status = splice_to_file(io, sock, buf, chunk, fd, offset, count, piece,
                                    state, mutex);
        if (status != 3) return status;
    }
    while (state[0] < count) {
        u64 left = count - state[0];
        size_t want = left < chunk ? (size_t)left : chunk;
        if (got < want) {
            ssize_t n = io->recv(sock, buf + got, want - got, MSG_WAITALL);
            if (n < 0) {
                int error = *io->errno_location();
                /* A signal for the process may land in this thread (Python does
                 * not block them in its threads); Python's own calls retry too. */
                if (error == EINTR) continue;
                state[2] = (u64)error;
                return -1;
            }
            /* Closed: bytes in hand (the head's) are still written; the next
             * receive then says so. */
            if (n == 0 && got == 0) return 1;
            got += (size_t)n;
        }
        if (write_chunk(io, fd, buf, got, offset + (i64)state[0], piece, mutex, state))
            return -2;
        if (which >= 0) state[1] = crc_update(which, buf, got, state[1]);
        state[0] += (u64)got;
        got = 0;
    }
    return 0;
}

/* ---- a whole small GET ------------------------------------------------------ */

/* The end of the head (just past its blank line) in head[0, n), or 0. */
static size_t head_end(const u8 *head, size_t from, size_t n) {
    for (size_t i = from; i + 4 <= n; i++)
        if (head[i] == '\r' && head[i + 1] == '\n' && head[i + 2] == '\r' &&
            head[i + 3] == '\n')
            return i + 4;
    return 0;
}

/* Whether field name[0, n) is `lower` (lower case, NUL-terminated), whatever its case. */
static int name_is(const u8 *name, size_t n, const char *lower) {
    size_t i = 0;
    for (; i < n && lower[i]; i++) {
        u8 c = name[i];
        if (c >= 'A' && c <= 'Z') c = (u8)(c + 32);
        if (c != (u8)lower[i]) return 0;
    }
    return i == n && !lower[i];
}

/* A decimal value between optional spaces and tabs; 0 if it is not one. */
static int parse_length(const u8 *s, size_t n, u64 *out) {
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    if (!n || n > 19) return 0;
    u64 value = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        value = value * 10 + (u64)(s[i] - '0');
    }
    *out = value;
    return 1;
}

/*
 * Whether head[0, end) is "HTTP/1.x 200" with one Content-Length of `size` and
 * no Transfer-Encoding; sets *which to the kind of the first of `names` (as
 * get_to_file's) that the head holds, else to the default after them.
 */
static int plain_ok(const u8 *head, size_t end, u64 size, const char *names,
                    const int *kinds, int *which) {
    static const char status[] = "HTTP/1.x 200";
    if (end < 16) return 0;
    for (size_t i = 0; i < 12; i++)
        if (i != 7 && head[i] != (u8)status[i]) return 0;
    if (head[7] < '0' || head[7] > '9') return 0;
    if (head[12] != ' ' && head[12] != '\r') return 0;
    int lengths = 0, best = -1;
    size_t line = 0;
    while (head[line] != '\r' || head[line + 1] != '\n') line++;
    line += 2;
    /* Field lines up to the blank line (end - 2). */
    while (line < end - 2) {
        size_t eol = line, colon = 0;
        while (head[eol] != '\r' || head[eol + 1] != '\n') {
            if (!colon && head[eol] == ':') colon = eol;
            eol++;
        }
        if (colon) {
            const u8 *name = head + line;
            size_t n = colon - line;
            if (name_is(name, n, "transfer-encoding")) return 0;
            if (name_is(name, n, "content-length")) {
                u64 value;
                if (!parse_length(head + colon + 1, eol - colon - 1, &value) ||
                    value != size)
                    return 0;
                lengths++;
            }
            int index = 0;
            for (const char *c = names; *c; index++) {
                if ((best < 0 || index < best) && name_is(name, n, c)) best = index;
                while (*c) c++;
                c++;
            }
        }
        line = eol + 2;
    }
    int count = 0;
    for (const char *c = names; *c; count++)
        while (*c++) {}
    *which = kinds[best < 0 ? count : best];
    return lengths > 0;
}

int get_to_file(const struct io *io, int sock, const u8 *request,
                size_t request_len, u8 *head, size_t head_size,
                const char *names, const int *kinds, u8 *buf, size_t chunk,
                int fd, u64 size, size_t piece, u64 state[5]) {
    for (size_t sent = 0; sent < request_len;) {
        ssize_t n = io->send(sock, request + sent, request_len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            int error = *io->errno_location();
            if (error == EINTR) continue;
            state[2] = (u64)error;
            return -1;
        }
        sent += (size_t)n;
    }
    size_t got = 0, end = 0;
    while (!end) {
        if (got == head_size) return 2;
        ssize_t n = io->recv(sock, head + got, head_size - got, 0);
        if (n < 0) {
            int error = *io->errno_location();
            if (error == EINTR) continue;
            state[2] = (u64)error;
            return -1;
        }
        if (n == 0) return 1;
        size_t from = got > 3 ? got - 3 : 0;
        got += (size_t)n;
        state[3] = got;
        end = head_end(head, from, got);
    }
    state[3] = end;
    int which;
    if (!plain_ok(head, end, size, names, kinds, &which)) return 2;
    state[4] = (u64)(i64)which;
    /* Body bytes that came with the head go first, from where they are. */
    size_t early = got - end;
    if (early > size) return 2;
    if (early) {
        if (write_chunk(io, fd, head + end, early, 0, piece, 0, state)) return -2;
        if (which >= 0) state[1] = crc_update(which, head + end, early, state[1]);
        state[0] = early;
    }
    /* Not by splice: for one small body a pipe costs more than the copies. */
    return recv_to_file(io, sock, buf, chunk, 0, fd, 0, size, piece, which, state, 0,
                        0);
}
