/*
 * One variant of md5x16 (_md5x16.c), for vectors V of W words: the first NL
 * lanes (LANES unless defined: 8 for md5x8) in NL / W of them, stepped together.
 * Included once per variant, with VARIANT (the function's name), VARIANT_TARGET
 * (its target attribute), V, W, WORDS (the transposition into NV vectors V) and
 * perhaps NL defined; undefines them.
 */

#ifndef NL
#define NL LANES
#endif
#define NV (NL / W)

/* a = b + ((a + f(b, c, d) + m[k] + T[t]) <<< s), for every vector. The part of
 * the sum that does not wait for b (`early`) is added first and made opaque: GCC
 * otherwise reassociates it after f, which puts two more additions on the chain
 * from one step to the next (a chain of such steps timed by hand, two AVX2
 * vectors interleaved: 8.8 cycles a step, 7.1 with the sum kept). `late` is the
 * part that waits for b. */
#define STEP(a, b, c, d, k, s, t, early, late)              \
    for (int g = 0; g < NV; g++) {                           \
        V x_ = a[g] + m[k][g] + kt[t] + (early);             \
        OPAQUE(x_);                                          \
        x_ += (late);                                        \
        a[g] = b[g] + ((x_ << (s)) | (x_ >> (32 - (s))));    \
    }

/* The round functions: F = (b & c) | (~b & d), G = (b & d) | (c & ~d),
 * H = b ^ c ^ d, I = c ^ (b | ~d), written so that b enters last. G's two terms
 * share no bits, so | is + and c & ~d joins the early sum. */
#define F(a, b, c, d, k, s, t) STEP(a, b, c, d, k, s, t, 0, d[g] ^ (b[g] & (c[g] ^ d[g])))
#define G(a, b, c, d, k, s, t) STEP(a, b, c, d, k, s, t, c[g] & ~d[g], b[g] & d[g])
#define H(a, b, c, d, k, s, t) STEP(a, b, c, d, k, s, t, 0, b[g] ^ (c[g] ^ d[g]))
#define I(a, b, c, d, k, s, t) STEP(a, b, c, d, k, s, t, 0, c[g] ^ (b[g] | ~d[g]))

VARIANT_TARGET static void VARIANT(MD5X16_ARGS) {
    V a[NV], b[NV], c[NV], d[NV], n[NV];
    for (int g = 0; g < NV; g++) {
        __builtin_memcpy(&a[g], state + W * g, sizeof a[g]);
        __builtin_memcpy(&b[g], state + 16 + W * g, sizeof b[g]);
        __builtin_memcpy(&c[g], state + 32 + W * g, sizeof c[g]);
        __builtin_memcpy(&d[g], state + 48 + W * g, sizeof d[g]);
        __builtin_memcpy(&n[g], nblocks + W * g, sizeof n[g]);
    }
    /* Hidden from GCC, which would otherwise build each constant from an immediate
     * (mov, vmovd, vpbroadcastd: three instructions a step) instead of
     * broadcasting it from memory. */
    const u32 *kt = T;
    OPAQUE_POINTER(kt);
    u32 most = 0;
    for (int j = 0; j < NL; j++)
        if (nblocks[j] > most) most = nblocks[j];
    for (u32 blk = 0; blk < most; blk++) {
        const u8 *row[NL];
        for (int j = 0; j < NL; j++)
            row[j] = blk < nblocks[j] ? data[j] + (size_t)blk * 64 : zero_block;
        /* Sixteen streams from the page cache: the hardware prefetcher alone
         * left the AVX2 variant 5-7 % slower (by hand, 16 x 16 MiB mapped). */
        for (int j = 0; j < NL; j++)
            if (blk + 8 < nblocks[j]) __builtin_prefetch(data[j] + (size_t)(blk + 8) * 64);
        V m[16][NV];
        WORDS(NV, m, row);
        V aa[NV], bb[NV], cc[NV], dd[NV];
        for (int g = 0; g < NV; g++) {
            aa[g] = a[g];
            bb[g] = b[g];
            cc[g] = c[g];
            dd[g] = d[g];
        }

        F(a, b, c, d, 0, 7, 0);
        F(d, a, b, c, 1, 12, 1);
        F(c, d, a, b, 2, 17, 2);
        F(b, c, d, a, 3, 22, 3);
        F(a, b, c, d, 4, 7, 4);
        F(d, a, b, c, 5, 12, 5);
        F(c, d, a, b, 6, 17, 6);
        F(b, c, d, a, 7, 22, 7);
        F(a, b, c, d, 8, 7, 8);
        F(d, a, b, c, 9, 12, 9);
        F(c, d, a, b, 10, 17, 10);
        F(b, c, d, a, 11, 22, 11);
        F(a, b, c, d, 12, 7, 12);
        F(d, a, b, c, 13, 12, 13);
        F(c, d, a, b, 14, 17, 14);
        F(b, c, d, a, 15, 22, 15);

        G(a, b, c, d, 1, 5, 16);
        G(d, a, b, c, 6, 9, 17);
        G(c, d, a, b, 11, 14, 18);
        G(b, c, d, a, 0, 20, 19);
        G(a, b, c, d, 5, 5, 20);
        G(d, a, b, c, 10, 9, 21);
        G(c, d, a, b, 15, 14, 22);
        G(b, c, d, a, 4, 20, 23);
        G(a, b, c, d, 9, 5, 24);
        G(d, a, b, c, 14, 9, 25);
        G(c, d, a, b, 3, 14, 26);
        G(b, c, d, a, 8, 20, 27);
        G(a, b, c, d, 13, 5, 28);
        G(d, a, b, c, 2, 9, 29);
        G(c, d, a, b, 7, 14, 30);
        G(b, c, d, a, 12, 20, 31);

        H(a, b, c, d, 5, 4, 32);
        H(d, a, b, c, 8, 11, 33);
        H(c, d, a, b, 11, 16, 34);
        H(b, c, d, a, 14, 23, 35);
        H(a, b, c, d, 1, 4, 36);
        H(d, a, b, c, 4, 11, 37);
        H(c, d, a, b, 7, 16, 38);
        H(b, c, d, a, 10, 23, 39);
        H(a, b, c, d, 13, 4, 40);
        H(d, a, b, c, 0, 11, 41);
        H(c, d, a, b, 3, 16, 42);
        H(b, c, d, a, 6, 23, 43);
        H(a, b, c, d, 9, 4, 44);
        H(d, a, b, c, 12, 11, 45);
        H(c, d, a, b, 15, 16, 46);
        H(b, c, d, a, 2, 23, 47);

        I(a, b, c, d, 0, 6, 48);
        I(d, a, b, c, 7, 10, 49);
        I(c, d, a, b, 14, 15, 50);
        I(b, c, d, a, 5, 21, 51);
        I(a, b, c, d, 12, 6, 52);
        I(d, a, b, c, 3, 10, 53);
        I(c, d, a, b, 10, 15, 54);
        I(b, c, d, a, 1, 21, 55);
        I(a, b, c, d, 8, 6, 56);
        I(d, a, b, c, 15, 10, 57);
        I(c, d, a, b, 6, 15, 58);
        I(b, c, d, a, 13, 21, 59);
        I(a, b, c, d, 4, 6, 60);
        I(d, a, b, c, 11, 10, 61);
        I(c, d, a, b, 2, 15, 62);
        I(b, c, d, a, 9, 21, 63);

        /* Lanes past their last block keep their state. */
        for (int g = 0; g < NV; g++) {
            V live = (V)((V){0} + blk < n[g]);
            a[g] = aa[g] + (a[g] & live);
            b[g] = bb[g] + (b[g] & live);
            c[g] = cc[g] + (c[g] & live);
            d[g] = dd[g] + (d[g] & live);
        }
    }
    for (int g = 0; g < NV; g++) {
        __builtin_memcpy(state + W * g, &a[g], sizeof a[g]);
        __builtin_memcpy(state + 16 + W * g, &b[g], sizeof b[g]);
        __builtin_memcpy(state + 32 + W * g, &c[g], sizeof c[g]);
        __builtin_memcpy(state + 48 + W * g, &d[g], sizeof d[g]);
    }
}

#undef STEP
#undef F
#undef G
#undef H
#undef I
#undef NV
#undef NL
#undef VARIANT
#undef VARIANT_TARGET
#undef V
#undef W
#undef WORDS
