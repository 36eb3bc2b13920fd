/* bench/tcp-ceiling.c — what one loopback TCP stream of 1 MiB messages costs on
 * this machine, without any iSCSI: the ceiling the 1m-read-qd8 rows of bench.sh
 * run against. Two processes (a fork), one TCP connection over 127.0.0.1:
 *
 *   tcp-ceiling [--mode stream|rr] [--msg BYTES] [--pdu BYTES] [--qd N] [--secs S]
 *               [--sndbuf BYTES] [--rcvbuf BYTES] [--src MiB] [--huge 0|1] [--splice 0|1]
 *
 *   stream  the sender writes messages back to back, the receiver reads them:
 *           the most a single stream carries.
 *   rr      (default) like a target answering 1 MiB READs at queue depth N: the
 *           receiver (the "initiator") sends a 48-byte request per message and
 *           keeps N outstanding; the sender (the "target") reads the requests
 *           that arrived and answers them in ONE writev, each answer a 48-byte
 *           header before every --pdu bytes of data plus a 48-byte status (the
 *           shape of iSCSI Data-In PDUs of MaxRecvDataSegmentLength bytes).
 *
 * The sender's bytes come from a --src MiB buffer walked sequentially (default
 * 1024, like the 1 GiB LUNs: the source is not in the CPU caches; --huge 1 asks
 * for transparent huge pages on it, as rtarget's ramdisk chunks have), the receiver
 * reads into a 4 MiB buffer (as bench/iscsi-load.c does) and only counts bytes.
 * --splice 1 sends the data without the sender's copy: vmsplice(2) of the source pages
 * into a 1 MiB pipe, then splice(2) to the socket (headers by send with MSG_MORE), the
 * zero-copy path a target could take for a ramdisk READ. Over loopback the receiver
 * copies straight from the lent pages (no MSG_ZEROCOPY fallback copy).
 * Both set TCP_NODELAY. Prints one line:
 *   "msgs_per_s MB_per_s sender_cpu_us_per_msg receiver_cpu_us_per_msg"
 * (user+system CPU of each process over the messages it moved). Built with
 * `cc -O2`; no library beyond libc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HDR 48
#define RXCAP (4 << 20)
#define MAXIOV 1024

static size_t msg = 1 << 20, pdu = 256 << 10, src_mib = 1024;
static int qd = 8, secs = 4, sndbuf, rcvbuf, rr = 1, huge, use_splice;
static int pipefd[2]; /* --splice: the pipe the source pages are lent through */

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_us(int who) {
    struct rusage r;
    getrusage(who, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static void tune(int s) {
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sndbuf && setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf)) die("SO_SNDBUF");
    if (rcvbuf && setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf)) die("SO_RCVBUF");
}

/* Bytes on the wire per message. */
static size_t wire_len(void) {
    return rr ? msg + HDR * ((msg + pdu - 1) / pdu) + HDR : msg;
}

/* --splice: headers by send(MSG_MORE), data lent page by page: vmsplice into the pipe,
 * splice from it to the socket. Returns -1 when the peer closed. */
static int splice_out(int s, const struct iovec *v, int iv) {
    for (int i = 0; i < iv; i++) {
        if (v[i].iov_len <= HDR) {
            if (send(s, v[i].iov_base, v[i].iov_len, MSG_MORE) != (ssize_t)v[i].iov_len) return -1;
            continue;
        }
        struct iovec x = v[i];
        while (x.iov_len) {
            ssize_t n = vmsplice(pipefd[1], &x, 1, 0);
            if (n <= 0) die("vmsplice");
            x.iov_base = (uint8_t *)x.iov_base + n, x.iov_len -= (size_t)n;
            while (n > 0) {
                ssize_t m = splice(pipefd[0], NULL, s, NULL, (size_t)n, SPLICE_F_MORE);
                if (m <= 0) return -1;
                n -= m;
            }
        }
    }
    return 0;
}

/* The sender ("target"): answers until the peer closes. */
static void sender(int s, uint8_t *src) {
    size_t srclen = src_mib << 20, pos = 0;
    static uint8_t hdr[HDR], req[64 * 1024];
    static struct iovec iov[MAXIOV];
    size_t pending = 0; /* requests read but not answered (rr) */
    for (;;) {
        if (rr) {
            ssize_t n = recv(s, req, sizeof req, pending ? MSG_DONTWAIT : 0);
            if (n == 0) break;
            if (n > 0) pending += (size_t)n; /* counted in bytes: HDR per request */
            if (pending < HDR) continue;
        }
        int iv = 0;
        size_t answers = rr ? pending / HDR : 8;
        for (size_t a = 0; a < answers && iv + 2 * (int)(msg / pdu + 2) < MAXIOV; a++) {
            if (pos + msg > srclen) pos = 0;
            if (rr) {
                for (size_t off = 0; off < msg; off += pdu) {
                    iov[iv++] = (struct iovec){hdr, HDR};
                    iov[iv++] = (struct iovec){src + pos + off, msg - off < pdu ? msg - off : pdu};
                }
                iov[iv++] = (struct iovec){hdr, HDR};
                pending -= HDR;
            } else {
                iov[iv++] = (struct iovec){src + pos, msg};
            }
            pos += msg;
        }
        if (use_splice) {
            if (splice_out(s, iov, iv)) return;
            continue;
        }
        /* writev until every byte left (partial writes happen when the send buffer fills). */
        struct iovec *v = iov;
        while (iv > 0) {
            ssize_t n = writev(s, v, iv);
            if (n < 0) {
                if (rr) return; /* the peer closed mid-answer */
                return;
            }
            while (iv > 0 && (size_t)n >= v->iov_len) n -= (ssize_t)v->iov_len, v++, iv--;
            if (iv > 0) v->iov_base = (uint8_t *)v->iov_base + n, v->iov_len -= (size_t)n;
        }
    }
}

/* The receiver ("initiator"): runs for `secs`, returns messages moved. */
static double receiver(int s, double *elapsed) {
    static uint8_t rx[RXCAP], reqs[MAXIOV * HDR];
    size_t per = wire_len(), got = 0;
    long done = 0, sent = 0;
    double t0 = now(), end = t0 + secs;
    if (rr) { /* prime the queue */
        if (send(s, reqs, (size_t)qd * HDR, 0) != (ssize_t)((size_t)qd * HDR)) die("send");
        sent = qd;
    }
    while (now() < end) {
        ssize_t n = recv(s, rx, RXCAP, 0);
        if (n <= 0) die("recv");
        got += (size_t)n;
        long now_done = (long)(got / per);
        if (rr && now_done > done) {
            long more = now_done - done;
            if (send(s, reqs, (size_t)more * HDR, 0) != (ssize_t)((size_t)more * HDR)) die("send");
            sent += more;
        }
        done = now_done;
    }
    *elapsed = now() - t0;
    return (double)done;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--mode")) rr = strcmp(v, "stream") != 0;
        else if (!strcmp(a, "--msg")) msg = strtoul(v, NULL, 0);
        else if (!strcmp(a, "--pdu")) pdu = strtoul(v, NULL, 0);
        else if (!strcmp(a, "--qd")) qd = atoi(v);
        else if (!strcmp(a, "--secs")) secs = atoi(v);
        else if (!strcmp(a, "--sndbuf")) sndbuf = atoi(v);
        else if (!strcmp(a, "--rcvbuf")) rcvbuf = atoi(v);
        else if (!strcmp(a, "--src")) src_mib = strtoul(v, NULL, 0);
        else if (!strcmp(a, "--huge")) huge = atoi(v);
        else if (!strcmp(a, "--splice")) use_splice = atoi(v);
        else goto usage;
        i++;
    }
    if (!msg || !pdu || qd < 1 || qd > MAXIOV || src_mib * (1 << 20) < msg) goto usage;

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        die("listen");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) { /* the sender fills its source, then connects (the clock starts at accept) */
        size_t srclen = src_mib << 20;
        uint8_t *src = mmap(NULL, srclen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (src == MAP_FAILED) die("mmap");
        if (huge) madvise(src, srclen, MADV_HUGEPAGE);
        memset(src, 0x5a, srclen);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        tune(s);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa)) die("connect");
        signal(SIGPIPE, SIG_IGN);
        if (use_splice && (pipe(pipefd) || fcntl(pipefd[1], F_SETPIPE_SZ, 1 << 20) < 0)) die("pipe");
        sender(s, src);
        _exit(0);
    }
    int s = accept(l, NULL, NULL);
    if (s < 0) die("accept");
    tune(s);
    double c0 = cpu_us(RUSAGE_SELF), el = 0;
    /* The child's CPU: from /proc before and after (it has not exited yet). */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)child);
    double tck = (double)sysconf(_SC_CLK_TCK);
    unsigned long u0 = 0, s0 = 0, u1 = 0, s1 = 0;
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &u0, &s0) != 2) die("stat");
    fclose(f);
    double msgs = receiver(s, &el);
    double c1 = cpu_us(RUSAGE_SELF);
    f = fopen(path, "r");
    if (!f || fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &u1, &s1) != 2) die("stat");
    fclose(f);
    close(s);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    double snd_us = (double)(u1 + s1 - u0 - s0) * 1e6 / tck;
    printf("%.0f %.1f %.1f %.1f\n", msgs / el, msgs * (double)msg / el / 1e6, snd_us / msgs,
           (c1 - c0) / msgs);
    return 0;
usage:
    fprintf(stderr, "usage: tcp-ceiling [--mode stream|rr] [--msg BYTES] [--pdu BYTES] [--qd N] "
                    "[--secs S] [--sndbuf BYTES] [--rcvbuf BYTES] [--src MiB] [--huge 0|1] [--splice 0|1]\n");
    return 2;
}
