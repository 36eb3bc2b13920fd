/* bench/dio.c — a tiny O_DIRECT load generator for bench/loopback.sh (built
 * static on the host, copied into the test guest, which has no fio).
 * usage: dio DEV read|write seq|rand BS SECS
 * One request at a time (QD1) for SECS seconds: sequential requests wrap at
 * the end of the device; random ones are BS-aligned (xorshift64, fixed seed,
 * so every device sees the same offsets). Prints "OPS ops SECS s IOPS MB/s". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: dio DEV read|write seq|rand BS SECS\n");
        return 2;
    }
    int wr = strcmp(argv[2], "write") == 0, rnd = strcmp(argv[3], "rand") == 0;
    size_t bs = strtoul(argv[4], NULL, 0);
    double secs = atof(argv[5]);
    int fd = open(argv[1], (wr ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) { perror(argv[1]); return 1; }
    unsigned long long size = 0;
    struct stat st;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) {   /* a regular file (host smoke test) */
        if (fstat(fd, &st) < 0) { perror("fstat"); return 1; }
        size = st.st_size;
    }
    unsigned long long blocks = size / bs;
    void *buf = aligned_alloc(4096, bs);
    if (!buf || blocks == 0) { fprintf(stderr, "bad size\n"); return 1; }
    memset(buf, 0xa5, bs);
    unsigned long long ops = 0, x = 0x9e3779b97f4a7c15ULL;
    double t0 = now(), t = t0;
    while (t - t0 < secs) {
        unsigned long long blk = ops % blocks;
        if (rnd) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            blk = x % blocks;
        }
        ssize_t r = wr ? pwrite(fd, buf, bs, blk * bs) : pread(fd, buf, bs, blk * bs);
        if (r != (ssize_t)bs) { perror("I/O"); return 1; }
        ops++;
        t = now();
    }
    double el = t - t0;
    printf("%llu ops %.3f s %.0f IOPS %.2f MB/s\n", ops, el, ops / el, ops * (double)bs / el / 1e6);
    return 0;
}
