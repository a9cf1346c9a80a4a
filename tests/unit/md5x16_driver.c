/*
 * A test driver for _md5x16.c on another CPU (test_md5lanes: aarch64 under
 * qemu-user): `md5x16_driver FILE OFFSET LENGTH [OFFSET LENGTH ...]` prints the
 * MD5 of each span of FILE in hex, one per line, hashed by md5x16_mapped 16 at a
 * time with a small window, so that every call path (window, tail, padding) runs.
 * Exit 2 if a map fails.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "_md5x16.c"

/* Declared here: <sys/mman.h> would clash with the kernel's own PROT_READ. */
void *mmap(void *addr, size_t n, int prot, int flags, int fd, long offset);
int munmap(void *addr, size_t n);

#define WINDOW 4096

int main(int argc, char **argv) {
    if (argc < 2 || argc % 2) return 1;
    int fd[LANES]; /* one per lane, as for many small files */
    for (int j = 0; j < LANES; j++)
        if ((fd[j] = open(argv[1], O_RDONLY)) < 0) return 1;
    int count = (argc - 2) / 2;
    struct mapper io = {mmap, munmap, (__UINT64_TYPE__)sysconf(_SC_PAGESIZE)};
    static u8 pad[LANES * 128];
    for (int first = 0; first < count; first += LANES) {
        u32 state[64], failed, active = 0, done = 0;
        __UINT64_TYPE__ pos[LANES], end[LANES], length[LANES];
        for (int j = 0; j < LANES && first + j < count; j++) {
            pos[j] = strtoull(argv[2 + 2 * (first + j)], 0, 10);
            length[j] = strtoull(argv[3 + 2 * (first + j)], 0, 10);
            end[j] = pos[j] + length[j];
            state[j] = 0x67452301;
            state[16 + j] = 0xefcdab89;
            state[32 + j] = 0x98badcfe;
            state[48 + j] = 0x10325476;
            active |= 1u << j;
        }
        while (done != active) {
            int got = md5x16_mapped(&io, fd, state, pos, end, length, active & ~done,
                                    pad, WINDOW, &failed);
            if (got < 0) return 2;
            done |= (u32)got;
        }
        for (int j = 0; j < LANES && first + j < count; j++) {
            for (int word = 0; word < 4; word++)
                for (int byte = 0; byte < 4; byte++)
                    printf("%02x", (state[16 * word + j] >> (8 * byte)) & 0xff);
            printf("\n");
        }
    }
    return 0;
}
