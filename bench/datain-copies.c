/* bench/datain-copies.c — CPU per 1 MiB "READ" sent over TCP loopback from a
 * page-cache file, per way of getting the bytes into the socket (see
 * BENCHMARKS.md, "sendfile Data-In for fileio: not safe"):
 *   pread+write  today's fileio path: copy to a buffer, copy into the socket
 *   mmap+write   the file's pages lent to write(2): one copy, at send time
 *   sendfile     page references in the socket: no copy on the sender, the
 *                receiver copies from the page cache when it reads
 * The receiver is a child process reading 1 MiB at a time (the initiator).
 * usage: datain-copies FILE [ITERS [ROUNDS]]   (FILE is created, then removed;
 * put it on /dev/shm for the bench's "shm" LU). Prints the median sender,
 * receiver and total CPU in µs per MiB over the rounds, modes interleaved.
 * build: gcc -O2 -o /tmp/datain-copies bench/datain-copies.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1L << 20)
#define FILE_MIB 64
#define MODES 3
static const char *names[MODES] = {"pread+write", "mmap+write", "sendfile"};

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double us(struct rusage *r)
{
    return (r->ru_utime.tv_sec + r->ru_stime.tv_sec) * 1e6 + r->ru_utime.tv_usec +
           r->ru_stime.tv_usec;
}

static void write_all(int s, const char *p, long n)
{
    while (n > 0) {
        long w = write(s, p, n);
        if (w <= 0)
            die("write");
        p += w;
        n -= w;
    }
}

/* One run of ITERS MiB in `mode`: sender and receiver CPU (µs per MiB). */
static void run(int mode, int fd, char *map, char *buf, int iters, double *snd, double *rcv)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (void *)&a, sizeof a) || listen(ls, 1) ||
        getsockname(ls, (void *)&a, &al))
        die("listen");
    struct rusage c0, c1, s0, s1;
    getrusage(RUSAGE_CHILDREN, &c0);
    pid_t pid = fork();
    if (pid == 0) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof a))
            die("connect");
        for (long left = iters * MIB; left > 0;) {
            long n = read(c, buf, MIB);
            if (n <= 0)
                die("read");
            left -= n;
        }
        _exit(0);
    }
    int s = accept(ls, 0, 0);
    if (s < 0)
        die("accept");
    getrusage(RUSAGE_SELF, &s0);
    for (int i = 0; i < iters; i++) {
        off_t off = (off_t)(i % FILE_MIB) * MIB;
        if (mode == 0) {
            if (pread(fd, buf, MIB, off) != MIB)
                die("pread");
            write_all(s, buf, MIB);
        } else if (mode == 1) {
            write_all(s, map + off, MIB);
        } else {
            for (long d = 0; d < MIB;) {
                long n = sendfile(s, fd, &off, MIB - d);
                if (n <= 0)
                    die("sendfile");
                d += n;
            }
        }
    }
    getrusage(RUSAGE_SELF, &s1);
    close(s);
    close(ls);
    waitpid(pid, 0, 0);
    getrusage(RUSAGE_CHILDREN, &c1);
    *snd = (us(&s1) - us(&s0)) / iters;
    *rcv = (us(&c1) - us(&c0)) / iters;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [ITERS [ROUNDS]]\n", argv[0]);
        return 2;
    }
    int iters = argc > 2 ? atoi(argv[2]) : 2000, rounds = argc > 3 ? atoi(argv[3]) : 5;
    if (iters < 1 || rounds < 1 || rounds > 64)
        return 2;
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die(argv[1]);
    unlink(argv[1]);
    char *buf = malloc(MIB);
    memset(buf, 'x', MIB);
    for (int i = 0; i < FILE_MIB; i++)
        if (pwrite(fd, buf, MIB, i * MIB) != MIB)
            die("pwrite");
    char *map = mmap(0, FILE_MIB * MIB, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        die("mmap");
    double snd[MODES][64], rcv[MODES][64], tot[MODES][64];
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < MODES; m++) {
            run(m, fd, map, buf, iters, &snd[m][r], &rcv[m][r]);
            tot[m][r] = snd[m][r] + rcv[m][r];
        }
    printf("%-12s %8s %8s %8s  (µs CPU per MiB, median of %d rounds x %d MiB)\n", "mode", "sender",
           "receiver", "total", rounds, iters);
    for (int m = 0; m < MODES; m++)
        printf("%-12s %8.0f %8.0f %8.0f\n", names[m], median(snd[m], rounds),
               median(rcv[m], rounds), median(tot[m], rounds));
    return 0;
}
