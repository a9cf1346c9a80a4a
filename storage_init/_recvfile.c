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
 * Freestanding like the other kernels: libc's recv, pwrite, errno location and
 * pthread mutex calls are passed in (`struct io`), so the library still links
 * against nothing.
 *
 * ABI:
 *   int recv_to_file(const struct io *io, int sock, uint8_t *buf, size_t chunk,
 *                    size_t have, int fd, int64_t offset, uint64_t count,
 *                    size_t piece, int which, uint64_t state[3], void *mutex);
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
};

u64 crc_update(int which, const u8 *data, size_t n, u64 crc);

#define MSG_WAITALL 0x100
#define EINTR 4
#define EIO 5

int recv_to_file(const struct io *io, int sock, u8 *buf, size_t chunk,
                 size_t have, int fd, i64 offset, u64 count, size_t piece,
                 int which, u64 state[3], void *mutex) {
    size_t got = have;
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
        i64 at = offset + (i64)state[0];
        if (mutex) io->lock(mutex);
        for (size_t done = 0; done < got;) {
            size_t n = got - done < piece ? got - done : piece;
            ssize_t wrote = io->pwrite(fd, buf + done, n, at + (i64)done);
            if (wrote <= 0) {
                int error = wrote < 0 ? *io->errno_location() : EIO;
                if (error == EINTR) continue;
                if (mutex) io->unlock(mutex);
                state[2] = (u64)error;
                return -2;
            }
            done += (size_t)wrote;
        }
        if (mutex) io->unlock(mutex);
        if (which >= 0) state[1] = crc_update(which, buf, got, state[1]);
        state[0] += (u64)got;
        got = 0;
    }
    return 0;
}
