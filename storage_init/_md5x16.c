/*
 * MD5 of up to 16 independent messages at once, one per SIMD lane.
 *
 * MD5 is a serial chain of 64 dependent steps per 64-byte block, so one message
 * runs at ~5 cycles/byte whatever the CPU (OpenSSL: ~780 MB/s here). The parts of
 * a multipart upload are independent messages, though (their ETag is the MD5 of
 * the part MD5s), so 16 of them can advance together in the 16 lanes of a vector:
 * the same instruction count per block as one message, 16 blocks' worth of work.
 *
 * Written with GCC/Clang vector extensions, not intrinsics: the same source
 * compiles to AVX-512 (one zmm per vector), AVX2 (two ymm), SSE2 or NEON, and
 * target_clones picks the best the CPU has when the library loads.
 *
 * Freestanding: no Python headers, and of libc only what the compiler itself may
 * call (memset), which every process has. The library is loaded with ctypes, whose
 * foreign calls release the GIL, so it fits any Python version.
 *
 * ABI:
 *   void md5x16(uint32_t state[64], const uint8_t *const data[16],
 *               const uint32_t nblocks[16]);
 *     state: the A, B, C, D words of the 16 lanes, as A[16] B[16] C[16] D[16].
 *     data[j]: lane j's next nblocks[j] blocks of 64 bytes (already padded, for a
 *              message's last call). A lane with nblocks[j] == 0 is left
 *              unchanged and its pointer is never read.
 *
 *   int md5x16_mapped(const struct mapper *io, int fd, uint32_t state[64],
 *                     uint64_t pos[16], const uint64_t end[16],
 *                     const uint64_t length[16], uint32_t active,
 *                     uint8_t pad[16 * 128], uint64_t window, uint32_t *failed);
 *     Hashes the file spans of the lanes in `active` (a bit mask), each lane's
 *     next `window` bytes (a multiple of 64) from pos[j] up to end[j] at a time,
 *     until a lane's message is complete, so that one call (one GIL release) does
 *     the work of many. The bytes are read through read-only maps of the file,
 *     not copied: hashing 16 x 50 MiB from the page cache took (by hand) 0.12-0.15 s
 *     this way against 0.24 s with pread into a buffer (half of it the kernel's
 *     copy). `length[j]` is the message's whole length, for its padding.
 *     `io` holds libc's mmap and munmap, passed in so that this library links
 *     against nothing, and the page size. Offsets are 64-bit (LP64). The file
 *     must hold every span: a map past its end faults (SIGBUS) when read.
 *     Returns the mask of lanes whose message is complete (their digest is in
 *     `state`), 0 if none is active, or -1 when a map failed: *failed is then
 *     the lane, and the lanes' states are partial (the caller starts over).
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT32_TYPE__ u32;
typedef __SIZE_TYPE__ size_t;
typedef u32 vec __attribute__((vector_size(64)));
typedef int ivec __attribute__((vector_size(64)));

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "MD5 words are little-endian; this kernel loads them as native words"
#endif

#define LANES 16

/* MD5X16_NO_CLONES: one variant, for the flags given (the tests build each). */
#if defined(__x86_64__) && !defined(__clang__) && !defined(MD5X16_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

static inline vec rotl(vec x, int s) { return (x << s) | (x >> (32 - s)); }

static inline vec load_row(const u8 *p) {
    vec v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* Swap the off-diagonal b x b blocks of each 2b x 2b block of rows i, i + b: done
 * for b = 8, 4, 2, 1, it transposes 16 rows (lanes) into 16 columns (words). */
#define SWAP(i, b, lo, hi)                                         \
    do {                                                           \
        vec x_ = m[i], y_ = m[(i) + (b)];                          \
        m[i] = __builtin_shuffle(x_, y_, (ivec)lo);                \
        m[(i) + (b)] = __builtin_shuffle(x_, y_, (ivec)hi);        \
    } while (0)

#define LO8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define HI8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define LO4 {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}
#define HI4 {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}
#define LO2 {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}
#define HI2 {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}
#define LO1 {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}
#define HI1 {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}

static inline void transpose(vec m[16]) {
    for (int i = 0; i < 8; i++) SWAP(i, 8, LO8, HI8);
    for (int i = 0; i < 16; i += 8)
        for (int k = 0; k < 4; k++) SWAP(i + k, 4, LO4, HI4);
    for (int i = 0; i < 16; i += 4)
        for (int k = 0; k < 2; k++) SWAP(i + k, 2, LO2, HI2);
    for (int i = 0; i < 16; i += 2) SWAP(i, 1, LO1, HI1);
}

#define F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))
#define STEP(f, a, b, c, d, k, s, t) \
    a = b + rotl(a + f(b, c, d) + m[k] + (u32)(t), s)

static const u8 zero_block[64];

CLONES
void md5x16(u32 state[64], const u8 *const data[LANES], const u32 nblocks[LANES]) {
    vec a, b, c, d, n;
    __builtin_memcpy(&a, state, sizeof a);
    __builtin_memcpy(&b, state + 16, sizeof b);
    __builtin_memcpy(&c, state + 32, sizeof c);
    __builtin_memcpy(&d, state + 48, sizeof d);
    __builtin_memcpy(&n, nblocks, sizeof n);
    u32 most = 0;
    for (int j = 0; j < LANES; j++)
        if (nblocks[j] > most) most = nblocks[j];
    for (u32 blk = 0; blk < most; blk++) {
        vec m[16];
        for (int j = 0; j < LANES; j++)
            m[j] = load_row(blk < nblocks[j] ? data[j] + (size_t)blk * 64 : zero_block);
        transpose(m);
        vec aa = a, bb = b, cc = c, dd = d;

        STEP(F, a, b, c, d, 0, 7, 0xd76aa478);
        STEP(F, d, a, b, c, 1, 12, 0xe8c7b756);
        STEP(F, c, d, a, b, 2, 17, 0x242070db);
        STEP(F, b, c, d, a, 3, 22, 0xc1bdceee);
        STEP(F, a, b, c, d, 4, 7, 0xf57c0faf);
        STEP(F, d, a, b, c, 5, 12, 0x4787c62a);
        STEP(F, c, d, a, b, 6, 17, 0xa8304613);
        STEP(F, b, c, d, a, 7, 22, 0xfd469501);
        STEP(F, a, b, c, d, 8, 7, 0x698098d8);
        STEP(F, d, a, b, c, 9, 12, 0x8b44f7af);
        STEP(F, c, d, a, b, 10, 17, 0xffff5bb1);
        STEP(F, b, c, d, a, 11, 22, 0x895cd7be);
        STEP(F, a, b, c, d, 12, 7, 0x6b901122);
        STEP(F, d, a, b, c, 13, 12, 0xfd987193);
        STEP(F, c, d, a, b, 14, 17, 0xa679438e);
        STEP(F, b, c, d, a, 15, 22, 0x49b40821);

        STEP(G, a, b, c, d, 1, 5, 0xf61e2562);
        STEP(G, d, a, b, c, 6, 9, 0xc040b340);
        STEP(G, c, d, a, b, 11, 14, 0x265e5a51);
        STEP(G, b, c, d, a, 0, 20, 0xe9b6c7aa);
        STEP(G, a, b, c, d, 5, 5, 0xd62f105d);
        STEP(G, d, a, b, c, 10, 9, 0x02441453);
        STEP(G, c, d, a, b, 15, 14, 0xd8a1e681);
        STEP(G, b, c, d, a, 4, 20, 0xe7d3fbc8);
        STEP(G, a, b, c, d, 9, 5, 0x21e1cde6);
        STEP(G, d, a, b, c, 14, 9, 0xc33707d6);
        STEP(G, c, d, a, b, 3, 14, 0xf4d50d87);
        STEP(G, b, c, d, a, 8, 20, 0x455a14ed);
        STEP(G, a, b, c, d, 13, 5, 0xa9e3e905);
        STEP(G, d, a, b, c, 2, 9, 0xfcefa3f8);
        STEP(G, c, d, a, b, 7, 14, 0x676f02d9);
        STEP(G, b, c, d, a, 12, 20, 0x8d2a4c8a);

        STEP(H, a, b, c, d, 5, 4, 0xfffa3942);
        STEP(H, d, a, b, c, 8, 11, 0x8771f681);
        STEP(H, c, d, a, b, 11, 16, 0x6d9d6122);
        STEP(H, b, c, d, a, 14, 23, 0xfde5380c);
        STEP(H, a, b, c, d, 1, 4, 0xa4beea44);
        STEP(H, d, a, b, c, 4, 11, 0x4bdecfa9);
        STEP(H, c, d, a, b, 7, 16, 0xf6bb4b60);
        STEP(H, b, c, d, a, 10, 23, 0xbebfbc70);
        STEP(H, a, b, c, d, 13, 4, 0x289b7ec6);
        STEP(H, d, a, b, c, 0, 11, 0xeaa127fa);
        STEP(H, c, d, a, b, 3, 16, 0xd4ef3085);
        STEP(H, b, c, d, a, 6, 23, 0x04881d05);
        STEP(H, a, b, c, d, 9, 4, 0xd9d4d039);
        STEP(H, d, a, b, c, 12, 11, 0xe6db99e5);
        STEP(H, c, d, a, b, 15, 16, 0x1fa27cf8);
        STEP(H, b, c, d, a, 2, 23, 0xc4ac5665);

        STEP(I, a, b, c, d, 0, 6, 0xf4292244);
        STEP(I, d, a, b, c, 7, 10, 0x432aff97);
        STEP(I, c, d, a, b, 14, 15, 0xab9423a7);
        STEP(I, b, c, d, a, 5, 21, 0xfc93a039);
        STEP(I, a, b, c, d, 12, 6, 0x655b59c3);
        STEP(I, d, a, b, c, 3, 10, 0x8f0ccc92);
        STEP(I, c, d, a, b, 10, 15, 0xffeff47d);
        STEP(I, b, c, d, a, 1, 21, 0x85845dd1);
        STEP(I, a, b, c, d, 8, 6, 0x6fa87e4f);
        STEP(I, d, a, b, c, 15, 10, 0xfe2ce6e0);
        STEP(I, c, d, a, b, 6, 15, 0xa3014314);
        STEP(I, b, c, d, a, 13, 21, 0x4e0811a1);
        STEP(I, a, b, c, d, 4, 6, 0xf7537e82);
        STEP(I, d, a, b, c, 11, 10, 0xbd3af235);
        STEP(I, c, d, a, b, 2, 15, 0x2ad7d2bb);
        STEP(I, b, c, d, a, 9, 21, 0xeb86d391);

        /* Lanes past their last block keep their state. */
        vec live = (vec)((vec){0} + blk < n);
        a = aa + (a & live);
        b = bb + (b & live);
        c = cc + (c & live);
        d = dd + (d & live);
    }
    __builtin_memcpy(state, &a, sizeof a);
    __builtin_memcpy(state + 16, &b, sizeof b);
    __builtin_memcpy(state + 32, &c, sizeof c);
    __builtin_memcpy(state + 48, &d, sizeof d);
}

typedef void *(*mmap_fn)(void *addr, size_t n, int prot, int flags, int fd, long offset);
typedef int (*munmap_fn)(void *addr, size_t n);

struct mapper {
    mmap_fn mmap;
    munmap_fn munmap;
    __UINT64_TYPE__ page; /* the page size: offsets of maps are multiples of it */
};

#define PROT_READ 1
#define MAP_SHARED 1
#define MAP_FAILED ((void *)-1)

static void put_u64_le(u8 *p, __UINT64_TYPE__ v) {
    for (int i = 0; i < 8; i++) p[i] = (u8)(v >> (8 * i));
}

int md5x16_mapped(const struct mapper *io, int fd, u32 state[64],
                  __UINT64_TYPE__ pos[LANES], const __UINT64_TYPE__ end[LANES],
                  const __UINT64_TYPE__ length[LANES], u32 active, u8 *pad,
                  __UINT64_TYPE__ window, u32 *failed) {
    if (!active) return 0;
    const u8 *data[LANES];
    u32 nblocks[LANES];
    u8 *maps[LANES];
    size_t sizes[LANES];
    for (;;) {
        u32 done = 0;
        for (int j = 0; j < LANES; j++) {
            nblocks[j] = 0;
            data[j] = pad;
            maps[j] = 0;
            if (!(active >> j & 1)) continue;
            __UINT64_TYPE__ left = end[j] - pos[j];
            __UINT64_TYPE__ n = left < window ? left : window;
            if (n == left) done |= 1u << j;
            if (n == 0) continue; /* an empty message: padding only */
            __UINT64_TYPE__ base = pos[j] - pos[j] % io->page;
            size_t size = (size_t)(pos[j] - base + n);
            u8 *map = io->mmap(0, size, PROT_READ, MAP_SHARED, fd, (long)base);
            if (map == MAP_FAILED) {
                for (int i = 0; i < j; i++)
                    if (maps[i]) io->munmap(maps[i], sizes[i]);
                *failed = (u32)j;
                return -1;
            }
            maps[j] = map;
            sizes[j] = size;
            data[j] = map + (pos[j] - base);
            nblocks[j] = (u32)(n / 64);
        }
        md5x16(state, data, nblocks);
        if (done) {
            /* The last bytes of the finished lanes, then 0x80, zeros to 56 mod 64
             * and the length in bits, from their slot of `pad`. */
            for (int j = 0; j < LANES; j++) {
                nblocks[j] = 0;
                if (!(done >> j & 1)) continue;
                u32 tail = (u32)((end[j] - pos[j]) % 64);
                const u8 *from = data[j] + (size_t)(end[j] - pos[j] - tail);
                /* (data[j] is the map here unless the message is empty) */
                u8 *lane = pad + (size_t)j * 128;
                for (u32 i = 0; i < tail; i++) lane[i] = from[i];
                u32 padded = tail + 1 + (55 - tail % 64 + 64) % 64 + 8;
                lane[tail] = 0x80;
                for (u32 i = tail + 1; i < padded - 8; i++) lane[i] = 0;
                put_u64_le(lane + padded - 8, length[j] * 8);
                data[j] = lane;
                nblocks[j] = padded / 64;
            }
            md5x16(state, data, nblocks);
        }
        for (int j = 0; j < LANES; j++) {
            if (maps[j]) io->munmap(maps[j], sizes[j]);
            if (active >> j & 1) {
                __UINT64_TYPE__ left = end[j] - pos[j];
                pos[j] += left < window ? left : window;
            }
        }
        if (done) return (int)done;
    }
}
