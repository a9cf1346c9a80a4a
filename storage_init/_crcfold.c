/*
 * CRC-64/NVME, CRC-32C and CRC-32 by carry-less multiplication (PCLMULQDQ), with a
 * table-driven fallback, and O(log n) combination.
 *
 * All three are reflected CRCs with all-ones initial value and final XOR, so one
 * routine serves them, given the polynomial and its folding constants.
 *
 * Folding. A 128-bit block X of the message, followed by F more bits, contributes
 * X(x) * x^F to the remainder. Split X into H (its first 64 bits, the high-degree
 * half) and L; then X * x^F = H * x^(64+F) + L * x^F, and with K1 = x^(64+F-1) mod P
 * and K2 = x^(F-1) mod P (the -1: a carry-less product of two reflected 64-bit
 * values lands one bit low in a reflected 128-bit one), clmul(H, K1) ^ clmul(L, K2)
 * is a 128-bit block congruent to X moved F bits on, XORed into the block there.
 * Eight blocks are folded at once (F = 1024), then into one (F = 128), and the
 * last 16 bytes plus any tail go through the table. With VPCLMULQDQ the eight
 * blocks fold in four pairs of multiplications on AVX2 (two blocks per 256-bit
 * register) or two on AVX-512 (four per 512-bit one) instead of eight: the same
 * constants, the same result, twice PCLMULQDQ's throughput on an AVX2-only EPYC
 * (256 KiB chunks in the cache, benchmarks/kernels.py).
 *
 * Freestanding like _md5x16.c: no headers but the compiler's intrinsics.
 *
 * ABI:
 *   void crc_init(void);                      build the tables (once, at load)
 *   uint64_t crc_update(int which, const uint8_t *data, size_t n, uint64_t crc);
 *   uint64_t crc_combine(int which, uint64_t a, uint64_t b, uint64_t len_b);
 *   int crc_folds(void);                      the level in use: 1 PCLMULQDQ,
 *                                             2 VPCLMULQDQ on 256 bits, 3 on 512
 *   int crc_limit(int level);                 tests: use at most that level
 *   which: 0 CRC-64/NVME, 1 CRC-32C, 2 CRC-32. `crc` is the CRC of the data before
 *   (0 at the start), as stores print it.
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT32_TYPE__ u32;
typedef __UINT64_TYPE__ u64;
typedef __SIZE_TYPE__ size_t;

struct crc_kind {
    int width;   /* 64 or 32 */
    u64 poly;    /* reflected polynomial */
    u64 k1024[2], k128[2]; /* folding constants for F = 1024 and F = 128 */
    u64 table[256];
};

static struct crc_kind kinds[3] = {
    {64, 0x9a6c9329ac4bc9b5ULL, {0}, {0}, {0}},
    {32, 0x82f63b78ULL, {0}, {0}, {0}},
    {32, 0xedb88320ULL, {0}, {0}, {0}},
};

/* a * b mod P, both reflected (zlib's multmodp, for any width). */
static u64 mulmod(const struct crc_kind *k, u64 a, u64 b) {
    u64 top = 1ULL << (k->width - 1), p = 0;
    for (u64 m = top; m; m >>= 1) {
        if (a & m) p ^= b;
        b = (b & 1) ? (b >> 1) ^ k->poly : b >> 1;
    }
    return p;
}

/* x^n mod P, reflected. */
static u64 xpow(const struct crc_kind *k, u64 n) {
    u64 result = 1ULL << (k->width - 1); /* x^0 */
    u64 square = result >> 1;            /* x^1 */
    while (n) {
        if (n & 1) result = mulmod(k, result, square);
        square = mulmod(k, square, square);
        n >>= 1;
    }
    return result;
}

/* A reflected width-bit value as a reflected 64-bit clmul operand. */
static u64 widen(const struct crc_kind *k, u64 v) { return v << (64 - k->width); }

/* wide: 0 none, 1 VPCLMULQDQ with AVX2, 2 with AVX-512. */
static int folds, wide;

void crc_init(void) {
    for (int w = 0; w < 3; w++) {
        struct crc_kind *k = &kinds[w];
        for (u32 i = 0; i < 256; i++) {
            u64 c = i;
            for (int b = 0; b < 8; b++) c = (c & 1) ? (c >> 1) ^ k->poly : c >> 1;
            k->table[i] = c;
        }
        /* x^(64+F-1) and x^(F-1) mod P, whatever the width: folding moves
         * message bits, the CRC's width only bounds the constants' degree. */
        k->k1024[0] = widen(k, xpow(k, 64 + 1024 - 1));
        k->k1024[1] = widen(k, xpow(k, 1024 - 1));
        k->k128[0] = widen(k, xpow(k, 64 + 128 - 1));
        k->k128[1] = widen(k, xpow(k, 128 - 1));
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    folds = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    wide = folds && __builtin_cpu_supports("vpclmulqdq") &&
           __builtin_cpu_supports("avx2");
    wide += wide && __builtin_cpu_supports("avx512f");
#endif
}

int crc_folds(void) { return folds + wide; }

static int detected_folds, detected_wide;

/* Tests: use at most `level` (0 table, 1 PCLMULQDQ, 2 VPCLMULQDQ on 256-bit
 * registers, 3 on 512-bit ones); returns the level now in use. Not for
 * concurrent use with updates. */
int crc_limit(int level) {
    if (!detected_folds && !detected_wide) {
        detected_folds = folds;
        detected_wide = wide;
    }
    folds = detected_folds && level >= 1;
    wide = level >= 2 ? (detected_wide < level - 1 ? detected_wide : level - 1) : 0;
    return folds + wide;
}

static u64 bytewise(const struct crc_kind *k, u64 reg, const u8 *p, size_t n) {
    for (size_t i = 0; i < n; i++) reg = (reg >> 8) ^ k->table[(reg ^ p[i]) & 0xff];
    return reg;
}

#if defined(__x86_64__)
typedef long long v2di __attribute__((vector_size(16)));

__attribute__((target("pclmul,sse4.1"))) static inline v2di
fold(v2di x, v2di k, v2di next) {
    v2di hi = __builtin_ia32_pclmulqdq128(x, k, 0x00); /* H * K1 */
    v2di lo = __builtin_ia32_pclmulqdq128(x, k, 0x11); /* L * K2 */
    return hi ^ lo ^ next;
}

static inline v2di load128(const u8 *p) {
    v2di v;
    __builtin_memcpy(&v, p, 16);
    return v;
}

typedef long long v4di __attribute__((vector_size(32)));

/* The 8-block fold, two blocks per instruction: VPCLMULQDQ on CPUs with AVX2
 * but not AVX-512 (AMD Zen 3, the EPYC these benchmarks ran on; Intel's hybrid
 * client cores). */
__attribute__((target("vpclmulqdq,avx2"))) static void
fold8_ymm(const struct crc_kind *k, v2di acc[8], const u8 **pp, size_t *np) {
    const u8 *p = *pp;
    size_t n = *np;
    v4di a[4];
    __builtin_memcpy(a, acc, 128);
    long long k1 = (long long)k->k1024[0], k2 = (long long)k->k1024[1];
    v4di kk = {k1, k2, k1, k2};
    while (n >= 128) {
        for (int i = 0; i < 4; i++) {
            v4di next;
            __builtin_memcpy(&next, p + 32 * i, 32);
            a[i] = __builtin_ia32_vpclmulqdq_v4di(a[i], kk, 0x00) ^
                   __builtin_ia32_vpclmulqdq_v4di(a[i], kk, 0x11) ^ next;
        }
        p += 128;
        n -= 128;
    }
    __builtin_memcpy(acc, a, 128);
    *pp = p;
    *np = n;
}

typedef long long v8di __attribute__((vector_size(64)));

/* The same 8-block fold, four blocks per instruction (VPCLMULQDQ, AVX-512). */
__attribute__((target("vpclmulqdq,avx512f"))) static void
fold8_wide(const struct crc_kind *k, v2di acc[8], const u8 **pp, size_t *np) {
    const u8 *p = *pp;
    size_t n = *np;
    v8di a, b;
    __builtin_memcpy(&a, acc, 64);
    __builtin_memcpy(&b, acc + 4, 64);
    long long k1 = (long long)k->k1024[0], k2 = (long long)k->k1024[1];
    v8di kk = {k1, k2, k1, k2, k1, k2, k1, k2};
    while (n >= 128) {
        v8di na, nb;
        __builtin_memcpy(&na, p, 64);
        __builtin_memcpy(&nb, p + 64, 64);
        a = __builtin_ia32_vpclmulqdq_v8di(a, kk, 0x00) ^
            __builtin_ia32_vpclmulqdq_v8di(a, kk, 0x11) ^ na;
        b = __builtin_ia32_vpclmulqdq_v8di(b, kk, 0x00) ^
            __builtin_ia32_vpclmulqdq_v8di(b, kk, 0x11) ^ nb;
        p += 128;
        n -= 128;
    }
    __builtin_memcpy(acc, &a, 64);
    __builtin_memcpy(acc + 4, &b, 64);
    *pp = p;
    *np = n;
}

/* The register after `n` (>= 128) bytes at `p`, starting from register `reg`. */
__attribute__((target("pclmul,sse4.1"))) static u64
folded(const struct crc_kind *k, u64 reg, const u8 *p, size_t n) {
    v2di acc[8];
    for (int i = 0; i < 8; i++) acc[i] = load128(p + 16 * i);
    /* The register joins the first bytes: for a reflected CRC, XOR into them. */
    acc[0] ^= (v2di){(long long)reg, 0};
    p += 128;
    n -= 128;
    if (wide == 2) {
        fold8_wide(k, acc, &p, &n);
    } else if (wide) {
        fold8_ymm(k, acc, &p, &n);
    } else {
        v2di k1024 = {(long long)k->k1024[0], (long long)k->k1024[1]};
        while (n >= 128) {
            for (int i = 0; i < 8; i++)
                acc[i] = fold(acc[i], k1024, load128(p + 16 * i));
            p += 128;
            n -= 128;
        }
    }
    v2di k128 = {(long long)k->k128[0], (long long)k->k128[1]};
    v2di x = acc[0];
    for (int i = 1; i < 8; i++) x = fold(x, k128, acc[i]);
    while (n >= 16) {
        x = fold(x, k128, load128(p));
        p += 16;
        n -= 16;
    }
    u8 last[16];
    __builtin_memcpy(last, &x, 16);
    /* The 16 folded bytes are congruent to everything before them: their CRC
     * from a zero register, then the tail's, is the message's. */
    reg = bytewise(k, 0, last, 16);
    return bytewise(k, reg, p, n);
}
#endif

u64 crc_update(int which, const u8 *data, size_t n, u64 crc) {
    const struct crc_kind *k = &kinds[which];
    u64 mask = k->width == 64 ? ~0ULL : (1ULL << k->width) - 1;
    u64 reg = ~crc & mask;
#if defined(__x86_64__)
    if (folds && n >= 256) return ~folded(k, reg, data, n) & mask;
#endif
    return ~bytewise(k, reg, data, n) & mask;
}

u64 crc_combine(int which, u64 a, u64 b, u64 len_b) {
    const struct crc_kind *k = &kinds[which];
    return mulmod(k, a, xpow(k, 8 * len_b)) ^ b;
}
