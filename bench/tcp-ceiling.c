/* bench/tcp-ceiling.c — what one loopback TCP stream of 1 MiB messages costs on
 * this machine, without any iSCSI: the ceiling the 1m-read-qd8 rows of bench.sh
 * run against. Two processes (a fork), one TCP connection over 127.0.0.1:
 *
 *   tcp-ceiling [--mode stream|rr] [--msg BYTES] [--pdu BYTES] [--qd N] [--secs S]
 *               [--sndbuf BYTES] [--rcvbuf BYTES] [--src MiB] [--huge 0|1] [--splice 0|1]
 *               [--shape 0|1|2] [--cork 0|1|2] [--notsent N] [--zerocopy 0|1] [--sndforce 0|1]
 *               [--txcpu N] [--rxcpu N]
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
 * Sending-side variants (session 11, s11-sendside; all off by default):
 *   --shape 0|1|2  one writev per batch (rtarget's flush) | per message | per PDU
 *   --cork 1|2     TCP_CORK around the batch | MSG_MORE on every send but the last
 *   --notsent N    TCP_NOTSENT_LOWAT N on the sender
 *   --zerocopy 1   SO_ZEROCOPY + MSG_ZEROCOPY sends, completions read from the
 *                  error queue (at most 256 batches unconfirmed); counts on stderr
 *   --sndforce 1   --sndbuf by SO_SNDBUFFORCE (root: past net.core.wmem_max)
 *   --txcpu/--rxcpu N  pin the sender / the receiver to CPU N
 * Both set TCP_NODELAY. Prints one line:
 *   "msgs_per_s MB_per_s sender_cpu_us_per_msg receiver_cpu_us_per_msg
 *    sender_ctxsw_per_msg receiver_ctxsw_per_msg"
 * (user+system CPU of each process over the messages it moved). Built with
 * `cc -O2`; no library beyond libc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <poll.h>
#include <sched.h>
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
/* Session 11 (s11-sendside): sending-side variants, see the usage comment. */
static int cork, notsent, zerocopy, shape, sndforce, txcpu = -1, rxcpu = -1;
static long zc_sent, zc_done, zc_copied; /* MSG_ZEROCOPY sends, completions, copied ones */
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

/* Context switches (voluntary + involuntary) of a process, from /proc. */
static long ctxsw(int pid) {
    char path[64], line[256];
    long v = 0, x;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &x) == 1 ||
            sscanf(line, "nonvoluntary_ctxt_switches: %ld", &x) == 1)
            v += x;
    fclose(f);
    return v;
}

static double cpu_us(int who) {
    struct rusage r;
    getrusage(who, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static void tune(int s) {
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sndbuf && setsockopt(s, SOL_SOCKET, sndforce ? SO_SNDBUFFORCE : SO_SNDBUF, &sndbuf, sizeof sndbuf))
        die("SO_SNDBUF");
    if (rcvbuf && setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf)) die("SO_RCVBUF");
}

/* Options of the sending socket only (the "target"). */
static void tune_sender(int s) {
    if (notsent && setsockopt(s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &notsent, sizeof notsent)) die("NOTSENT");
    int one = 1;
    if (zerocopy && setsockopt(s, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one)) die("SO_ZEROCOPY");
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
}

/* --zerocopy: read the completions queued on the error queue (each covers a
 * range of sends). Blocks while more than `allow` sends are unconfirmed: a
 * lent buffer may be reused only after its completion. */
static void zc_reap(int s, long allow) {
    for (;;) {
        char ctl[256];
        struct msghdr m = {.msg_control = ctl, .msg_controllen = sizeof ctl};
        ssize_t r = recvmsg(s, &m, MSG_ERRQUEUE | MSG_DONTWAIT);
        if (r < 0) {
            if (errno != EAGAIN) die("errqueue");
            if (zc_sent - zc_done <= allow) return;
            struct pollfd p = {.fd = s, .events = 0};
            poll(&p, 1, 100); /* POLLERR wakes it */
            continue;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            struct sock_extended_err *e = (struct sock_extended_err *)CMSG_DATA(c);
            if (e->ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
            zc_done += (long)(e->ee_data - e->ee_info + 1);
            if (e->ee_code & SO_EE_CODE_ZEROCOPY_COPIED) zc_copied += (long)(e->ee_data - e->ee_info + 1);
        }
    }
}

/* Writes iov[0..iv) completely: writev, or sendmsg(MSG_ZEROCOPY) for --zerocopy.
 * Returns -1 when the peer closed. */
static int write_all(int s, struct iovec *v, int iv) {
    while (iv > 0) {
        ssize_t n;
        if (zerocopy) {
            struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)iv};
            n = sendmsg(s, &m, MSG_ZEROCOPY);
            if (n > 0) zc_sent++;
        } else {
            n = writev(s, v, iv);
        }
        if (n < 0) {
            if (errno == ENOBUFS && zerocopy) { /* optmem for the notifications: reap, retry */
                zc_reap(s, 0);
                continue;
            }
            return -1;
        }
        while (iv > 0 && (size_t)n >= v->iov_len) n -= (ssize_t)v->iov_len, v++, iv--;
        if (iv > 0) v->iov_base = (uint8_t *)v->iov_base + n, v->iov_len -= (size_t)n;
    }
    return 0;
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
        /* --shape 0: the whole batch in one writev (rtarget's flush); 1: one per
         * message (READ); 2: one per PDU (header + data). --cork 1 wraps the batch in
         * TCP_CORK, --cork 2 sends every piece but the last with MSG_MORE instead. */
        int on = 1, off = 0;
        if (cork == 1) setsockopt(s, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
        int per = shape == 0 ? iv : shape == 1 ? 2 * (int)((msg + pdu - 1) / pdu) + 1 : 2;
        if (!rr) per = shape == 0 ? iv : 1;
        for (int at = 0; at < iv; at += per) {
            int k = iv - at < per ? iv - at : per;
            if (cork == 2 && at + k < iv) {
                struct msghdr m = {.msg_iov = iov + at, .msg_iovlen = (size_t)k};
                struct iovec *v = iov + at;
                int left = k;
                while (left > 0) { /* MSG_MORE: the same as write_all, flag set */
                    m.msg_iov = v, m.msg_iovlen = (size_t)left;
                    ssize_t n = sendmsg(s, &m, MSG_MORE | (zerocopy ? MSG_ZEROCOPY : 0));
                    if (n < 0) return;
                    if (zerocopy) zc_sent++;
                    while (left > 0 && (size_t)n >= v->iov_len) n -= (ssize_t)v->iov_len, v++, left--;
                    if (left > 0) v->iov_base = (uint8_t *)v->iov_base + n, v->iov_len -= (size_t)n;
                }
            } else if (write_all(s, iov + at, k)) {
                return;
            }
        }
        if (cork == 1) setsockopt(s, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
        /* A lent source may be rewritten only after its completion; the 1 GiB
         * source is walked in order, so allow up to 256 batches unconfirmed. */
        if (zerocopy) zc_reap(s, 256);
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
        else if (!strcmp(a, "--cork")) cork = atoi(v);
        else if (!strcmp(a, "--notsent")) notsent = atoi(v);
        else if (!strcmp(a, "--zerocopy")) zerocopy = atoi(v);
        else if (!strcmp(a, "--shape")) shape = atoi(v);
        else if (!strcmp(a, "--sndforce")) sndforce = atoi(v);
        else if (!strcmp(a, "--txcpu")) txcpu = atoi(v);
        else if (!strcmp(a, "--rxcpu")) rxcpu = atoi(v);
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
        pin(txcpu);
        tune(s);
        tune_sender(s);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa)) die("connect");
        signal(SIGPIPE, SIG_IGN);
        if (use_splice && (pipe(pipefd) || fcntl(pipefd[1], F_SETPIPE_SZ, 1 << 20) < 0)) die("pipe");
        sender(s, src);
        if (zerocopy) fprintf(stderr, "zerocopy: %ld sends, %ld completed, %ld of them copied\n",
                              zc_sent, zc_done, zc_copied);
        _exit(0);
    }
    pin(rxcpu);
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
    long tx_cs0 = ctxsw(child), rx_cs0 = ctxsw(getpid());
    double msgs = receiver(s, &el);
    long tx_cs1 = ctxsw(child), rx_cs1 = ctxsw(getpid());
    double c1 = cpu_us(RUSAGE_SELF);
    f = fopen(path, "r");
    if (!f || fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &u1, &s1) != 2) die("stat");
    fclose(f);
    close(s);
    /* The sender sees the close and prints its --zerocopy counts; then it is gone. */
    for (int i = 0; i < 100 && waitpid(child, NULL, WNOHANG) == 0; i++) usleep(10000);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    double snd_us = (double)(u1 + s1 - u0 - s0) * 1e6 / tck;
    printf("%.0f %.1f %.1f %.1f %.1f %.1f\n", msgs / el, msgs * (double)msg / el / 1e6, snd_us / msgs,
           (c1 - c0) / msgs, (double)(tx_cs1 - tx_cs0) / msgs, (double)(rx_cs1 - rx_cs0) / msgs);
    return 0;
usage:
    fprintf(stderr, "usage: tcp-ceiling [--mode stream|rr] [--msg BYTES] [--pdu BYTES] [--qd N] "
                    "[--secs S] [--sndbuf BYTES] [--rcvbuf BYTES] [--src MiB] [--huge 0|1] [--splice 0|1]\n"
                    "       [--shape 0|1|2] [--cork 0|1|2] [--notsent N] [--zerocopy 0|1] [--sndforce 0|1]\n"
                    "       [--txcpu N] [--rxcpu N]\n");
    return 2;
}
