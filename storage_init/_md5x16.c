/*
 * MD5 of up to 16 independent messages at once, one per SIMD lane.
 *
 * MD5 is a serial chain of 64 dependent steps per 64-byte block, so one message
 * runs at ~5 cycles/byte whatever the CPU (OpenSSL: ~780 MB/s here). The parts of
 * a multipart upload are independent messages, though (their ETag is the MD5 of
 * the part MD5s), so 16 of them can advance together in the 16 lanes of a vector:
 * the same instruction count per block as one message, 16 blocks' worth of work.
 *
 * Written with GCC/Clang vector extensions, not intrinsics: one body
 * (_md5x16_body.h) is compiled for 16 lanes in one vector of 16 words (AVX-512),
 * two of 8 (AVX2) or four of 4 (NEON; SSE2 runs two calls of two), and on x86-64
 * the dynamic loader binds md5x16 to the best variant the CPU has.
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
 *   void md5x8(uint32_t state[64], const uint8_t *const data[16],
 *              const uint32_t nblocks[16]);
 *     md5x16 for lanes 0-7 only (lanes 8-15 are neither read nor changed):
 *     with vectors of fewer than 16 words it steps half of them, so a call that
 *     leaves lanes 8-15 idle takes about 0.6 of md5x16's time (AVX2, by hand:
 *     one 50 MiB message in 0.15 s against 0.24, eight in 0.20 against 0.30).
 *
 *   int md5x16_mapped(const struct mapper *io, const int fd[16],
 *                     uint32_t state[64], uint64_t pos[16], const uint64_t end[16],
 *                     const uint64_t length[16], uint32_t active,
 *                     uint8_t pad[16 * 128], uint64_t window, uint32_t *failed);
 *     Hashes the file spans of the lanes in `active` (a bit mask), lane j's in
 *     file fd[j] (the parts of one file, or many small files: a call costs the
 *     same with 1 busy lane as with 16), each lane's next `window` bytes (a
 *     multiple of 64) from pos[j] up to end[j] at a time,
 *     until a lane's message is complete, so that one call (one GIL release) does
 *     the work of many. The bytes are read through read-only maps of the file,
 *     not copied: hashing 16 x 50 MiB from the page cache took (by hand) 0.12-0.15 s
 *     this way against 0.24 s with pread into a buffer (half of it the kernel's
 *     copy). `length[j]` is the message's whole length, for its padding.
 *     `io` holds libc's mmap and munmap, passed in so that this library links
 *     against nothing, and the page size. Offsets are 64-bit (LP64). Each file
 *     must hold its lane's span: a map past its end faults (SIGBUS) when read.
 *     With no lane of 8-15 in `active`, it calls md5x8, not md5x16.
 *     Returns the mask of lanes whose message is complete (their digest is in
 *     `state`), 0 if none is active, or -1 when a map failed: *failed is then
 *     the lane, and the lanes' states are partial (the caller starts over).
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT32_TYPE__ u32;
typedef __SIZE_TYPE__ size_t;

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "MD5 words are little-endian; this kernel loads them as native words"
#endif

#define LANES 16

/* Where GCC builds for x86-64, md5x16 is an indirect function: the loader picks
 * the variant for the CPU (AVX-512, AVX2 or SSE2) once. Not target_clones: the
 * variants differ in source (their transposition), not only in flags.
 * MD5X16_NO_CLONES: one variant, for the flags given (the tests build each). */
#if defined(__x86_64__) && !defined(__clang__) && !defined(MD5X16_NO_CLONES)
#define DISPATCH 1
#endif

typedef u32 v16 __attribute__((vector_size(64)));
typedef int iv16 __attribute__((vector_size(64)));
typedef u32 v8 __attribute__((vector_size(32)));
typedef int iv8 __attribute__((vector_size(32)));
typedef u32 v4 __attribute__((vector_size(16)));
typedef int iv4 __attribute__((vector_size(16)));

static const u8 zero_block[64];

/* The step constants: floor(abs(sin(i + 1)) * 2^32). */
static const u32 T[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee,
    0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa,
    0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05,
    0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039,
    0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391
};

/* Blocks arrive lane-major (row j: lane j's 16 words); the steps want them
 * word-major (m[k][g]: word k of the lanes of vector g), so each block is
 * transposed. The shuffles must be ones the vector unit has, or GCC lowers them
 * element by element through memory (AVX2 lost two thirds of its speed so, with
 * 16-word shuffles split into 8-word halves). So the tiles are of the native
 * width: one of 16 x 16 words for AVX-512, whose two-source permute takes any
 * pattern; 8 x 8 in unpack and 128-bit-half patterns for AVX2; 4 x 4 in unpacks
 * for SSE2 and NEON. */

/* Swap the off-diagonal b x b blocks of each 2b x 2b block of rows i, i + b: done
 * for b = 8, 4, 2, 1, it transposes 16 rows (lanes) into 16 columns (words). */
#define SWAP(i, b, lo, hi)                                         \
    do {                                                           \
        v16 x_ = t[i], y_ = t[(i) + (b)];                          \
        t[i] = __builtin_shuffle(x_, y_, (iv16)lo);                \
        t[(i) + (b)] = __builtin_shuffle(x_, y_, (iv16)hi);        \
    } while (0)

#define LO8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define HI8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define LO4 {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}
#define HI4 {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}
#define LO2 {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}
#define HI2 {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}
#define LO1 {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}
#define HI1 {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}

/* The 16 lanes into m (ng is 1: one vector holds them all). */
static inline void words16(int ng, v16 m[16][ng], const u8 *const *row) {
    (void)ng;
    v16 t[16];
    for (int j = 0; j < LANES; j++) __builtin_memcpy(&t[j], row[j], sizeof t[j]);
    for (int i = 0; i < 8; i++) SWAP(i, 8, LO8, HI8);
    for (int i = 0; i < 16; i += 8)
        for (int k = 0; k < 4; k++) SWAP(i + k, 4, LO4, HI4);
    for (int i = 0; i < 16; i += 4)
        for (int k = 0; k < 2; k++) SWAP(i + k, 2, LO2, HI2);
    for (int i = 0; i < 16; i += 2) SWAP(i, 1, LO1, HI1);
    for (int k = 0; k < 16; k++) m[k][0] = t[k];
}

/* Interleave the 32-bit, then the 64-bit elements of two rows within each 128-bit
 * half (x86 punpck[lh]dq, punpck[lh]qdq; NEON zip1, zip2); then pair 128-bit
 * halves (vinserti128, vperm2i128). */
#define UNPACK32_LO8 ((iv8){0, 8, 1, 9, 4, 12, 5, 13})
#define UNPACK32_HI8 ((iv8){2, 10, 3, 11, 6, 14, 7, 15})
#define UNPACK64_LO8 ((iv8){0, 1, 8, 9, 4, 5, 12, 13})
#define UNPACK64_HI8 ((iv8){2, 3, 10, 11, 6, 7, 14, 15})
#define HALVES_LO8 ((iv8){0, 1, 2, 3, 8, 9, 10, 11})
#define HALVES_HI8 ((iv8){4, 5, 6, 7, 12, 13, 14, 15})

/* Lanes row[0..7], words 0-15 of each, into word-major out[k] (word k of the 8). */
static inline void words8_group(v8 out[16], const u8 *const *row) {
    for (int h = 0; h < 2; h++) {
        /* Words 8h..8h+7 of each lane. */
        v8 r[8], s[8], u[8];
        for (int i = 0; i < 8; i++) __builtin_memcpy(&r[i], row[i] + 32 * h, sizeof r[i]);
        for (int i = 0; i < 8; i += 2) {
            s[i] = __builtin_shuffle(r[i], r[i + 1], UNPACK32_LO8);
            s[i + 1] = __builtin_shuffle(r[i], r[i + 1], UNPACK32_HI8);
        }
        for (int i = 0; i < 8; i += 4)
            for (int k = 0; k < 2; k++) {
                u[i + 2 * k] = __builtin_shuffle(s[i + k], s[i + k + 2], UNPACK64_LO8);
                u[i + 2 * k + 1] = __builtin_shuffle(s[i + k], s[i + k + 2], UNPACK64_HI8);
            }
        /* u[k] (k < 4) holds words k and k + 4 of lanes 0-3 (its two halves);
         * u[k + 4] the same of lanes 4-7. */
        for (int k = 0; k < 4; k++) {
            out[8 * h + k] = __builtin_shuffle(u[k], u[k + 4], HALVES_LO8);
            out[8 * h + k + 4] = __builtin_shuffle(u[k], u[k + 4], HALVES_HI8);
        }
    }
}

/* Lanes 8g..8g+7 of `row` into column g of m, for each of the ng groups. */
static inline void words8(int ng, v8 m[16][ng], const u8 *const *row) {
    for (int g = 0; g < ng; g++) {
        v8 out[16];
        words8_group(out, row + 8 * g);
        for (int k = 0; k < 16; k++) m[k][g] = out[k];
    }
}

#define UNPACK32_LO4 ((iv4){0, 4, 1, 5})
#define UNPACK32_HI4 ((iv4){2, 6, 3, 7})
#define UNPACK64_LO4 ((iv4){0, 1, 4, 5})
#define UNPACK64_HI4 ((iv4){2, 3, 6, 7})

/* Lanes row[0..3], words 0-15 of each, into word-major out[k] (word k of the 4). */
static inline void words4_group(v4 out[16], const u8 *const *row) {
    for (int h = 0; h < 4; h++) {
        /* Words 4h..4h+3 of each lane. */
        v4 r[4], s[4];
        for (int i = 0; i < 4; i++) __builtin_memcpy(&r[i], row[i] + 16 * h, sizeof r[i]);
        s[0] = __builtin_shuffle(r[0], r[1], UNPACK32_LO4);
        s[1] = __builtin_shuffle(r[0], r[1], UNPACK32_HI4);
        s[2] = __builtin_shuffle(r[2], r[3], UNPACK32_LO4);
        s[3] = __builtin_shuffle(r[2], r[3], UNPACK32_HI4);
        out[4 * h] = __builtin_shuffle(s[0], s[2], UNPACK64_LO4);
        out[4 * h + 1] = __builtin_shuffle(s[0], s[2], UNPACK64_HI4);
        out[4 * h + 2] = __builtin_shuffle(s[1], s[3], UNPACK64_LO4);
        out[4 * h + 3] = __builtin_shuffle(s[1], s[3], UNPACK64_HI4);
    }
}

/* Lanes 4g..4g+3 of `row` into column g of m, for each of the ng groups. */
static inline void words4(int ng, v4 m[16][ng], const u8 *const *row) {
    for (int g = 0; g < ng; g++) {
        v4 out[16];
        words4_group(out, row + 4 * g);
        for (int k = 0; k < 16; k++) m[k][g] = out[k];
    }
}

/* An empty asm that claims to change its operand, in a vector register: GCC then
 * cannot reassociate the sum across it (below). */
#if defined(__x86_64__)
#define OPAQUE(x) __asm__("" : "+v"(x))
#elif defined(__aarch64__)
#define OPAQUE(x) __asm__("" : "+w"(x))
#else
#define OPAQUE(x) ((void)0)
#endif
#define OPAQUE_POINTER(p) __asm__("" : "+r"(p))

/* Pointers, not arrays of 64 and 16: md5x16_sse2 passes md5x8 the upper lanes
 * (state + 8: lanes 8-15 of each word, 48 words from the end) as lanes 0-7. */
#define MD5X16_ARGS u32 *state, const u8 *const *data, const u32 *nblocks
typedef void md5x16_fn(MD5X16_ARGS);

#ifdef DISPATCH
#define VARIANT md5x16_avx512
#define VARIANT_TARGET __attribute__((target("avx512f")))
#define V v16
#define W 16
#define WORDS words16
#include "_md5x16_body.h"

#define VARIANT md5x16_avx2
#define VARIANT_TARGET __attribute__((target("avx2")))
#define V v8
#define W 8
#define WORDS words8
#include "_md5x16_body.h"

#define VARIANT md5x8_avx2
#define VARIANT_TARGET __attribute__((target("avx2")))
#define V v8
#define W 8
#define NL 8
#define WORDS words8
#include "_md5x16_body.h"

#define VARIANT md5x8_sse2
#define VARIANT_TARGET
#define V v4
#define W 4
#define NL 8
#define WORDS words4
#include "_md5x16_body.h"

/* SSE2 has 16 registers: the four vectors of each state word (16 lanes) left it
 * spilling, and two calls of eight lanes (two vectors) are faster (by hand,
 * `benchmarks.kernels`: 2.48 GiB/s against 1.57 for four vectors at once). */
static void md5x16_sse2(MD5X16_ARGS) {
    md5x8_sse2(state, data, nblocks);
    md5x8_sse2(state + 8, data + 8, nblocks + 8);
}

/* Run by the dynamic loader when it binds md5x16 (before constructors, so the
 * CPU model is initialised here; libgcc provides it). */
static md5x16_fn *md5x16_pick(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return md5x16_avx512;
    if (__builtin_cpu_supports("avx2")) return md5x16_avx2;
    return md5x16_sse2;
}
void md5x16(MD5X16_ARGS) __attribute__((ifunc("md5x16_pick")));

/* AVX-512 steps 16 lanes in one vector: as fast as 8 would be. */
static md5x16_fn *md5x8_pick(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return md5x16_avx512;
    if (__builtin_cpu_supports("avx2")) return md5x8_avx2;
    return md5x8_sse2;
}
void md5x8(MD5X16_ARGS) __attribute__((ifunc("md5x8_pick")));
#else
/* MD5X16_WIDTH picks the body by hand, so that the tests can run each width's
 * source on any x86-64 CPU (the AVX-512 one emulated in pairs of AVX2 vectors,
 * without the sum barrier, which needs the vector in one register). */
#if defined(MD5X16_WIDTH)
#define WIDTH MD5X16_WIDTH
#elif defined(__AVX512F__)
#define WIDTH 16
#elif defined(__AVX2__)
#define WIDTH 8
#else
#define WIDTH 4
#endif
#if WIDTH == 16 && !defined(__AVX512F__)
#undef OPAQUE
#define OPAQUE(x) ((void)0)
#elif WIDTH == 8 && defined(__x86_64__) && !defined(__AVX__)
#undef OPAQUE
#define OPAQUE(x) ((void)0)
#endif
#if WIDTH == 4 && defined(__x86_64__)
void md5x8(MD5X16_ARGS);
/* As md5x16_sse2 above: two calls of eight lanes. */
void md5x16(MD5X16_ARGS) {
    md5x8(state, data, nblocks);
    md5x8(state + 8, data + 8, nblocks + 8);
}
#else
#define VARIANT md5x16_native
#define VARIANT_TARGET
#define W WIDTH
#if WIDTH == 16
#define V v16
#define WORDS words16
#elif WIDTH == 8
#define V v8
#define WORDS words8
#else
#define V v4
#define WORDS words4
#endif
#include "_md5x16_body.h"
void md5x16(MD5X16_ARGS) { md5x16_native(state, data, nblocks); }
#endif
#if WIDTH == 16
void md5x8(MD5X16_ARGS) { md5x16_native(state, data, nblocks); }
#else
#define VARIANT md5x8_native
#define VARIANT_TARGET
#define W WIDTH
#define NL 8
#if WIDTH == 8
#define V v8
#define WORDS words8
#else
#define V v4
#define WORDS words4
#endif
#include "_md5x16_body.h"
void md5x8(MD5X16_ARGS) { md5x8_native(state, data, nblocks); }
#endif
#endif

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

int md5x16_mapped(const struct mapper *io, const int fd[LANES], u32 state[64],
                  __UINT64_TYPE__ pos[LANES], const __UINT64_TYPE__ end[LANES],
                  const __UINT64_TYPE__ length[LANES], u32 active, u8 *pad,
                  __UINT64_TYPE__ window, u32 *failed) {
    if (!active) return 0;
    /* Lanes 8-15 idle: half the vectors to step (AVX2: one, not two). */
    md5x16_fn *hash = active >> 8 ? md5x16 : md5x8;
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
            u8 *map = io->mmap(0, size, PROT_READ, MAP_SHARED, fd[j], (long)base);
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
        hash(state, data, nblocks);
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
            hash(state, data, nblocks);
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
