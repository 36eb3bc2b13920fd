/* bench/write-landing.c — what it costs a receiver to land a large write's data in
 * a file, by method, without any iSCSI: the receiving half of a 1 MiB WRITE QD8 as
 * bench/iscsi-load.c drives rtarget (libiscsi's limits: 256 KiB of immediate data,
 * then R2T'd Data-Out bursts of 256 KiB, one R2T outstanding per command, each a
 * 48-byte header before its data). Two processes (a fork), one TCP connection over
 * 127.0.0.1:
 *
 *   write-landing [--method M] [--seg BYTES] [--qd N] [--ack N] [--secs S]
 *                 [--file PATH] [--file-mib N] [--pipe BYTES] [--huge 0|1] [--lowat 0|1]
 *
 *   sender    (the "initiator") streams messages of a 48-byte header + --seg bytes
 *             (default 256 KiB) from a 64 MiB source walked sequentially; with
 *             --ack N (default 1) it keeps at most --qd (default 8) messages
 *             unanswered and the receiver answers every N landed messages with
 *             48 bytes (an R2T or a SCSI Response: one per segment is what a target
 *             sends for libiscsi's 1 MiB writes); --ack 0 is a plain stream.
 *   receiver  (the "target") reads each header with recv(MSG_WAITALL), then lands
 *             the segment at the next offset of --file (default a fresh
 *             --file-mib 1024 MiB file in /dev/shm, written full first so its pages
 *             exist, as bench/ab.sh's fileio LUN is; walked sequentially, wrapping):
 *     recv      recv(MSG_WAITALL) into one reused buffer, then pwrite: rtarget's
 *               way today (two copies: socket -> buffer -> page cache)
 *     splice    splice(socket -> pipe), splice(pipe -> file at offset), looping on
 *               short splices; pipe of --pipe bytes (default --seg, F_SETPIPE_SZ)
 *     mmap      recv(MSG_WAITALL) straight into a MAP_SHARED mapping of the whole
 *               file, pre-faulted with MAP_POPULATE (one copy: socket -> page cache)
 *     mmapcold  the same mapping, not pre-faulted, and each landed segment's pages
 *               dropped from it afterwards (MADV_DONTNEED: they stay in the page
 *               cache), so every page's first touch faults, every time
 *     mmapseg   mmap of just the segment's range, recv into it, munmap (a mapping
 *               per command: faults plus map/unmap)
 *     sendfile  sendfile(file <- socket) at the file position: splice's work in one
 *               call, if the kernel took a socket as sendfile's source (6.18: EINVAL)
 *     discard   recv(MSG_WAITALL) into the reused buffer and nothing else: the
 *               receive alone, the floor every method's landing cost sits on
 *     uring     (built with -DWITH_URING -luring) recv + pwrite as two linked
 *               io_uring SQEs, one io_uring_enter per segment: method recv with
 *               fewer syscalls
 *     uringsplice  (same build) the two splices of method splice as linked SQEs
 *   --huge 1 asks for transparent huge pages on the recv buffer (method recv).
 *   --lowat 1 (default) waits for each whole message with one wake-up, as rtarget's
 *   rx_wait does (SO_RCVLOWAT of header + segment, then poll); --lowat 0 lands as
 *   data comes (a wake-up for every few arriving pieces: more CPU on both sides).
 *
 * Both set TCP_NODELAY. Prints one line:
 *   "MiB_per_s receiver_cpu_us_per_MiB sender_cpu_us_per_MiB"
 * (user+system CPU of each process over the data landed; the receiver's from
 * getrusage, the sender's from /proc), after checking that the landed range of the
 * file holds the bytes sent. Built with `cc -O2`; no library beyond libc
 * (liburing only with -DWITH_URING). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_URING
#include <liburing.h>
#endif

#define HDR 48
#define SRC (64u << 20)

enum { RECV, SPLICE, MMAP, MMAPCOLD, MMAPSEG, SENDFILE, DISCARD, URING, URINGSPLICE };
static const char *names[] = {"recv", "splice", "mmap", "mmapcold", "mmapseg", "sendfile", "discard", "uring", "uringsplice"};

static size_t seg = 256 << 10, file_len = 1024ul << 20, pipe_sz;
static int method, qd = 8, ack = 1, secs = 4, huge, lowat = 1;
static const char *path;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_us(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static void tune(int s) {
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* The sender ("initiator"): until the peer closes. */
static void sender(int s) {
    uint8_t *src = mmap(NULL, SRC, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (src == MAP_FAILED) die("mmap");
    memset(src, 0x5a, SRC);
    static uint8_t hdr[HDR], acks[64 * 1024];
    size_t pos = 0, acked = 0;
    long credits = ack ? qd : 1L << 60;
    hdr[0] = 0x05; /* a Data-Out's opcode; the receiver only counts */
    for (;;) {
        while (credits > 0) {
            if (pos + seg > SRC) pos = 0;
            struct iovec iov[2] = {{hdr, HDR}, {src + pos, seg}}, *v = iov;
            int iv = 2;
            while (iv > 0) {
                ssize_t n = writev(s, v, iv);
                if (n < 0) return; /* the peer closed */
                while (iv > 0 && (size_t)n >= v->iov_len) n -= (ssize_t)v->iov_len, v++, iv--;
                if (iv > 0) v->iov_base = (uint8_t *)v->iov_base + n, v->iov_len -= (size_t)n;
            }
            pos += seg;
            credits--;
        }
        ssize_t n = recv(s, acks, sizeof acks, 0);
        if (n <= 0) return;
        acked += (size_t)n;
        credits += (long)(acked / HDR) * ack;
        acked %= HDR;
    }
}

static int recv_all(int s, void *buf, size_t len) {
    while (len) {
        ssize_t n = recv(s, buf, len, MSG_WAITALL);
        if (n <= 0) return -1;
        buf = (uint8_t *)buf + n, len -= (size_t)n;
    }
    return 0;
}

/* Lands `seg` bytes from the socket at file offset `off`, by `method`. */
static int pipefd[2], fd;
static uint8_t *buf, *map;
#ifdef WITH_URING
static struct io_uring ring;
#endif

static void land(int s, off_t off) {
    switch (method) {
    case RECV: {
        if (recv_all(s, buf, seg)) die("recv");
        for (size_t done = 0; done < seg;) {
            ssize_t n = pwrite(fd, buf + done, seg - done, off + (off_t)done);
            if (n <= 0) die("pwrite");
            done += (size_t)n;
        }
        break;
    }
    case SPLICE: {
        /* In as much as the pipe holds (short splices: one skb fragment per pipe slot),
         * then drain it into the file; repeat until the segment is in. */
        size_t left = seg;
        while (left) {
            ssize_t in = 0;
            do {
                ssize_t n = splice(s, NULL, pipefd[1], NULL, left - (size_t)in,
                                   SPLICE_F_MOVE | (in ? SPLICE_F_NONBLOCK : 0));
                if (n < 0 && errno == EAGAIN) break; /* pipe full or nothing more yet */
                if (n <= 0) die("splice in");
                in += n;
            } while ((size_t)in < left);
            for (ssize_t out = 0; out < in;) {
                ssize_t n = splice(pipefd[0], NULL, fd, &off, (size_t)(in - out), SPLICE_F_MOVE);
                if (n <= 0) die("splice out");
                out += n;
            }
            left -= (size_t)in;
        }
        break;
    }
    case MMAP:
        if (recv_all(s, map + off, seg)) die("recv into mapping");
        break;
    case MMAPCOLD:
        if (recv_all(s, map + off, seg)) die("recv into mapping");
        if (madvise(map + off, seg, MADV_DONTNEED)) die("madvise");
        break;
    case MMAPSEG: {
        uint8_t *m = mmap(NULL, seg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
        if (m == MAP_FAILED) die("mmap segment");
        if (recv_all(s, m, seg)) die("recv into mapping");
        munmap(m, seg);
        break;
    }
    case SENDFILE: {
        if (lseek(fd, off, SEEK_SET) < 0) die("lseek");
        for (size_t left = seg; left;) {
            ssize_t n = sendfile(fd, s, NULL, left);
            if (n <= 0) die("sendfile from a socket");
            left -= (size_t)n;
        }
        break;
    }
    case DISCARD:
        if (recv_all(s, buf, seg)) die("recv");
        break;
#ifdef WITH_URING
    case URING: {
        /* recv(WAITALL) linked to the pwrite of what it got: one enter per segment
         * (a short recv fails the link; then finish by hand). */
        struct io_uring_sqe *e = io_uring_get_sqe(&ring);
        io_uring_prep_recv(e, s, buf, seg, MSG_WAITALL);
        e->flags |= IOSQE_IO_LINK;
        e = io_uring_get_sqe(&ring);
        io_uring_prep_write(e, fd, buf, (unsigned)seg, (uint64_t)off);
        if (io_uring_submit_and_wait(&ring, 2) != 2) die("io_uring_submit");
        struct io_uring_cqe *c;
        int res[2], i = 0;
        while (i < 2 && !io_uring_peek_cqe(&ring, &c)) res[i++] = c->res, io_uring_cqe_seen(&ring, c);
        if (i != 2 || res[0] <= 0) die("uring recv");
        if ((size_t)res[0] < seg) { /* short recv: rare; the rest the plain way */
            if (recv_all(s, buf + res[0], seg - (size_t)res[0])) die("recv");
            res[1] = 0;
        }
        for (size_t done = res[1] > 0 ? (size_t)res[1] : 0; done < seg;) {
            ssize_t n = pwrite(fd, buf + done, seg - done, off + (off_t)done);
            if (n <= 0) die("pwrite");
            done += (size_t)n;
        }
        break;
    }
    case URINGSPLICE: {
        size_t left = seg;
        while (left) {
            struct io_uring_sqe *e = io_uring_get_sqe(&ring);
            io_uring_prep_splice(e, s, -1, pipefd[1], -1, (unsigned)left, SPLICE_F_MOVE);
            e->flags |= IOSQE_IO_LINK;
            e = io_uring_get_sqe(&ring);
            /* The pipe holds what the first splice got; splice out at most `left`
             * (a short first splice leaves the second short too: it takes what is there). */
            io_uring_prep_splice(e, pipefd[0], -1, fd, (int64_t)off, (unsigned)left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (io_uring_submit_and_wait(&ring, 2) != 2) die("io_uring_submit");
            struct io_uring_cqe *c;
            int res[2] = {0, 0}, i = 0;
            while (i < 2 && !io_uring_peek_cqe(&ring, &c)) res[i++] = c->res, io_uring_cqe_seen(&ring, c);
            if (i != 2 || res[0] <= 0) die("uring splice in");
            ssize_t out = res[1] > 0 ? res[1] : 0;
            while (out < res[0]) { /* a short link: drain the pipe by hand */
                ssize_t n = splice(pipefd[0], NULL, fd, &(off_t){off + out}, (size_t)(res[0] - out), SPLICE_F_MOVE);
                if (n <= 0) die("splice out");
                out += n;
            }
            off += res[0];
            left -= (size_t)res[0];
        }
        break;
    }
#endif
    default:
        fprintf(stderr, "write-landing: method uring/uringsplice not built in (-DWITH_URING -luring)\n");
        exit(2);
    }
}

/* The receiver ("target"): runs for `secs`, returns segments landed. */
static long receiver(int s, double *elapsed) {
    static uint8_t hdr[HDR], answers[HDR];
    off_t off = 0;
    long done = 0;
    double t0 = now(), end = t0 + secs;
    struct pollfd p = {.fd = s, .events = POLLIN};
    while (now() < end) {
        /* --lowat: the kernel wakes the poll once the whole message is queued (or
         * earlier when the receive window runs low: then the landing waits again). */
        if (lowat && poll(&p, 1, -1) < 0) die("poll");
        if (recv_all(s, hdr, HDR)) die("recv header");
        if (off + (off_t)seg > (off_t)file_len) off = 0;
        land(s, off);
        off += (off_t)seg;
        done++;
        if (ack && done % ack == 0 && send(s, answers, HDR, 0) != HDR) die("send");
    }
    *elapsed = now() - t0;
    return done;
}

static unsigned long proc_cpu_ticks(pid_t pid) {
    char p[64];
    unsigned long u = 0, st = 0;
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f || fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &u, &st) != 2) die("stat");
    fclose(f);
    return u + st;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--method")) {
            method = -1;
            for (int m = 0; m < (int)(sizeof names / sizeof *names); m++)
                if (!strcmp(v, names[m])) method = m;
            if (method < 0) goto usage;
        } else if (!strcmp(a, "--seg")) seg = strtoul(v, NULL, 0);
        else if (!strcmp(a, "--qd")) qd = atoi(v);
        else if (!strcmp(a, "--ack")) ack = atoi(v);
        else if (!strcmp(a, "--secs")) secs = atoi(v);
        else if (!strcmp(a, "--file")) path = v;
        else if (!strcmp(a, "--file-mib")) file_len = strtoul(v, NULL, 0) << 20;
        else if (!strcmp(a, "--pipe")) pipe_sz = strtoul(v, NULL, 0);
        else if (!strcmp(a, "--huge")) huge = atoi(v);
        else if (!strcmp(a, "--lowat")) lowat = atoi(v);
        else goto usage;
        i++;
    }
    if (!seg || seg % 4096 || seg > SRC || qd < 1 || ack < 0 || file_len < seg) goto usage;

    /* The file: given, or a fresh one in /dev/shm written full (pages exist). */
    char tmp[] = "/dev/shm/write-landing.XXXXXX";
    if (path) {
        fd = open(path, O_RDWR);
    } else {
        fd = mkstemp(tmp);
        if (fd >= 0) unlink(tmp);
    }
    if (fd < 0) die("open file");
    struct stat st;
    if (fstat(fd, &st)) die("fstat");
    if ((size_t)st.st_size < file_len) {
        static uint8_t z[1 << 20];
        for (size_t o = (size_t)st.st_size & ~(sizeof z - 1); o < file_len; o += sizeof z)
            if (pwrite(fd, z, sizeof z, (off_t)o) != (ssize_t)sizeof z) die("fill");
    }
    file_len -= file_len % seg;
    if (method == RECV || method == URING || method == DISCARD) {
        buf = mmap(NULL, seg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) die("mmap buffer");
        if (huge) madvise(buf, seg, MADV_HUGEPAGE);
        memset(buf, 0, seg);
    }
    if (method == MMAP || method == MMAPCOLD) {
        map = mmap(NULL, file_len, PROT_READ | PROT_WRITE, MAP_SHARED | (method == MMAP ? MAP_POPULATE : 0), fd, 0);
        if (map == MAP_FAILED) die("mmap file");
    }
    if (method == SPLICE || method == URINGSPLICE) {
        if (pipe(pipefd)) die("pipe");
        if (fcntl(pipefd[1], F_SETPIPE_SZ, (int)(pipe_sz ? pipe_sz : seg)) < 0) die("F_SETPIPE_SZ");
    }
#ifdef WITH_URING
    if ((method == URING || method == URINGSPLICE) && io_uring_queue_init(8, &ring, 0)) die("io_uring_queue_init");
#endif

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        die("listen");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(fd);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        tune(s);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa)) die("connect");
        signal(SIGPIPE, SIG_IGN);
        sender(s);
        _exit(0);
    }
    int s = accept(l, NULL, NULL);
    if (s < 0) die("accept");
    tune(s);
    int mark = (int)(HDR + seg);
    if (lowat && setsockopt(s, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark)) die("SO_RCVLOWAT");
    /* Let the sender fill its source before the clock starts (its CPU for that is
     * before the first /proc sample too). */
    usleep(300000);
    double c0 = cpu_us(), el = 0;
    unsigned long k0 = proc_cpu_ticks(child);
    long segs = receiver(s, &el);
    double c1 = cpu_us();
    unsigned long k1 = proc_cpu_ticks(child);
    close(s);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* Every landed byte is the sender's 0x5a (the file started as zeros). */
    size_t landed = method == DISCARD ? 0 : (size_t)segs * seg < file_len ? (size_t)segs * seg : file_len;
    static uint8_t chk[1 << 16];
    for (size_t o = 0; o < landed; o += sizeof chk) {
        size_t n = landed - o < sizeof chk ? landed - o : sizeof chk;
        if (pread(fd, chk, n, (off_t)o) != (ssize_t)n) die("verify pread");
        for (size_t i = 0; i < n; i++)
            if (chk[i] != 0x5a) {
                fprintf(stderr, "write-landing: byte %zu of the file is not the data sent\n", o + i);
                return 1;
            }
    }
    double mib = (double)segs * (double)seg / (1 << 20);
    printf("%.1f %.1f %.1f\n", mib / el, (c1 - c0) / mib, (double)(k1 - k0) * 1e6 / (double)sysconf(_SC_CLK_TCK) / mib);
    return 0;
usage:
    fprintf(stderr, "usage: write-landing [--method recv|splice|mmap|mmapcold|mmapseg|sendfile|discard|uring|uringsplice] "
                    "[--seg BYTES] [--qd N] [--ack N] [--secs S] [--file PATH] [--file-mib N] [--pipe BYTES] [--huge 0|1] "
                    "[--lowat 0|1]\n");
    return 2;
}
