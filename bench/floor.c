/* bench/floor.c — a MEASURING TOOL, not a target: the least a userspace TCP
 * responder can do to answer bench/iscsi-load.c, so bench/floor.sh can tell how
 * much of a target's CPU per QD1 round trip is the kernel's floor (the socket
 * calls, the sleep and the wake-up) and how much is the target's own.
 *
 *   floor PORT block|spin|yield
 *
 * It listens on 127.0.0.1:PORT and serves one connection at a time, on one
 * thread. It speaks just enough iSCSI for iscsi-load: a Login Request is answered
 * at once with the keys bench.sh negotiates (straight to full feature phase); a
 * READ(10)/READ CAPACITY(10) gets one Data-In with status (fixed data, no
 * backstore), any other command (WRITE(10) with all its data immediate or in
 * unsolicited Data-Out) a GOOD SCSI Response; NOP-Out is answered, Logout ends
 * the connection. No checking beyond framing: it trusts its one client.
 *
 * Per wake-up: one recv of everything there is, every complete PDU answered
 * into one iovec list, one writev — what rtarget's connection thread does, minus
 * the SCSI engine and the backstore. How it waits for the next PDU:
 *   block  a blocking recv (the thread sleeps; the next PDU wakes it)
 *   spin   recv(MSG_DONTWAIT) in a tight loop: never sleeps (a core at 100%)
 *   yield  the same with sched_yield() between tries (rtarget's busy poll)
 * It prints "commands cpu_us_per_command" (its own user+system CPU) on stderr
 * when a connection ends. FLOOR_RCVTIMEO_MS=N sets SO_RCVTIMEO as rtarget does
 * (its 200 ms tick): whether a timed sleep costs more than an untimed one. Built with `cc -O2`; no library beyond libc. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BHS 48
#define RXCAP (4 << 20)
#define MAXIOV 512
#define DATA_CAP (256 << 10)

enum mode { BLOCK, SPIN, YIELD };

static uint8_t rx[RXCAP];
static uint8_t data[DATA_CAP];   /* what every READ returns */
static uint8_t hdrs[MAXIOV / 2][BHS];
static struct iovec iov[MAXIOV];
static int niov, nhdr;
static uint32_t statsn = 1, expcmdsn = 1;

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put24(uint8_t *p, uint32_t v) { p[0] = v >> 16; p[1] = v >> 8; p[2] = v; }

static int flush(int fd)
{
    struct iovec *v = iov;
    int n = niov;
    while (n > 0) {
        ssize_t w = writev(fd, v, n > IOV_MAX ? IOV_MAX : n);
        if (w < 0 && errno == EAGAIN)
            continue;   /* the spinning modes leave the socket blocking: never here */
        if (w <= 0)
            return -1;
        while (n > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    niov = nhdr = 0;
    return 0;
}

/* A response header (zeroed, ITT copied, sequence numbers set) queued with
 * LEN bytes of BODY after it. */
static uint8_t *respond(int fd, const uint8_t *req, uint8_t op, const void *body, uint32_t len)
{
    if (niov + 2 > MAXIOV && flush(fd) < 0)
        return NULL;
    uint8_t *h = hdrs[nhdr++];
    memset(h, 0, BHS);
    h[0] = op;
    put24(h + 5, len);
    memcpy(h + 16, req + 16, 4);   /* ITT */
    put32(h + 24, statsn++);
    put32(h + 28, expcmdsn);
    put32(h + 32, expcmdsn + 127);
    iov[niov++] = (struct iovec){h, BHS};
    if (len)
        iov[niov++] = (struct iovec){(void *)body, (len + 3) & ~3u};
    return h;
}

static const char login_keys[] =
    "HeaderDigest=None\0DataDigest=None\0MaxRecvDataSegmentLength=262144\0"
    "InitialR2T=No\0ImmediateData=Yes\0FirstBurstLength=262144\0MaxBurstLength=262144\0"
    "MaxOutstandingR2T=1\0ErrorRecoveryLevel=0\0DefaultTime2Wait=0\0DefaultTime2Retain=0\0"
    "MaxConnections=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0";

/* Answers one PDU; 1 when the connection should end. */
static int answer(int fd, const uint8_t *p)
{
    uint8_t op = p[0] & 0x3f, *h;
    int immediate = p[0] & 0x40;
    switch (op) {
    case 0x03:   /* Login Request: accept, straight to full feature phase */
        expcmdsn = be32(p + 24);
        statsn = be32(p + 28);   /* ExpStatSN (0 on a new session is fine) */
        h = respond(fd, p, 0x23, login_keys, sizeof login_keys - 1);
        if (!h)
            return 1;
        h[1] = 0x80 | (1 << 2) | 3;
        memcpy(h + 8, p + 8, 6);   /* ISID */
        h[15] = 1;                 /* TSIH */
        return 0;
    case 0x01: { /* SCSI Command */
        if (!immediate)
            expcmdsn++;
        uint8_t cdb0 = p[32];
        uint32_t edtl = be32(p + 20);
        if (cdb0 == 0x28 || cdb0 == 0x25) {   /* READ(10), READ CAPACITY(10) */
            static uint8_t cap[8] = {0x00, 0x1f, 0xff, 0xff, 0, 0, 0x02, 0};   /* 1 GiB of 512 */
            const void *body = cdb0 == 0x25 ? (const void *)cap : data;
            uint32_t len = cdb0 == 0x25 ? 8 : edtl;
            if (len > DATA_CAP)
                return 1;
            h = respond(fd, p, 0x25, body, len);
            if (!h)
                return 1;
            h[1] = 0x80 | 0x01;           /* F, S: status follows, GOOD */
            put32(h + 20, 0xffffffffu);   /* TTT */
            return 0;
        }
        if (!(p[1] & 0x80))
            return 0;   /* unsolicited Data-Out follows: answer at its F bit */
        h = respond(fd, p, 0x21, NULL, 0);
        if (!h)
            return 1;
        h[1] = 0x80;
        return 0;
    }
    case 0x05:   /* Data-Out: the final one of an unsolicited burst completes it */
        if (!(p[1] & 0x80))
            return 0;
        h = respond(fd, p, 0x21, NULL, 0);
        if (!h)
            return 1;
        h[1] = 0x80;
        return 0;
    case 0x00:   /* NOP-Out */
        if (be32(p + 16) == 0xffffffffu)
            return 0;
        h = respond(fd, p, 0x20, NULL, 0);
        if (!h)
            return 1;
        h[1] = 0x80;
        put32(h + 20, 0xffffffffu);
        return 0;
    case 0x06:   /* Logout */
        h = respond(fd, p, 0x26, NULL, 0);
        if (h)
            h[1] = 0x80;
        flush(fd);
        return 1;
    default:
        return 1;
    }
}

/* Serves one connection; returns the commands answered. */
static uint64_t serve(int fd, enum mode m)
{
    size_t start = 0, end = 0;
    uint64_t cmds = 0;
    for (;;) {
        /* Every complete PDU in the buffer, then one writev. */
        for (;;) {
            size_t have = end - start;
            if (have < BHS)
                break;
            const uint8_t *p = rx + start;
            size_t total = BHS + (size_t)p[4] * 4 + (((be32(p + 4) & 0xffffff) + 3) & ~(size_t)3);
            if (total > RXCAP / 2)
                return cmds;
            if (have < total)
                break;
            cmds += (p[0] & 0x3f) == 0x01;
            if (answer(fd, p))
                return cmds;
            start += total;
        }
        if (niov && flush(fd) < 0)
            return cmds;
        if (start == end)
            start = end = 0;
        else if (RXCAP - end < RXCAP / 2) {
            memmove(rx, rx + start, end - start);
            end -= start;
            start = 0;
        }
        ssize_t n;
        if (m == BLOCK) {
            n = recv(fd, rx + end, RXCAP - end, 0);
        } else {
            while ((n = recv(fd, rx + end, RXCAP - end, MSG_DONTWAIT)) < 0 && errno == EAGAIN)
                if (m == YIELD)
                    sched_yield();
        }
        if (n <= 0)
            return cmds;
        end += (size_t)n;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor PORT block|spin|yield\n");
        return 2;
    }
    enum mode m = !strcmp(argv[2], "block") ? BLOCK : !strcmp(argv[2], "spin") ? SPIN
                : !strcmp(argv[2], "yield") ? YIELD : (enum mode)-1;
    if ((int)m < 0) {
        fprintf(stderr, "floor: mode is block, spin or yield\n");
        return 2;
    }
    memset(data, 0x5a, sizeof data);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) {
        perror("floor: listen");
        return 1;
    }
    for (;;) {
        int fd = accept(l, NULL, NULL);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (getenv("FLOOR_RCVTIMEO_MS")) {
            long ms = atol(getenv("FLOOR_RCVTIMEO_MS"));
            struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        }
        struct rusage r0, r1;
        getrusage(RUSAGE_SELF, &r0);
        uint64_t cmds = serve(fd, m);
        getrusage(RUSAGE_SELF, &r1);
        close(fd);
        double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 +
                     (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
        fprintf(stderr, "%llu %.2f\n", (unsigned long long)cmds, cmds ? cpu / (double)cmds : 0.0);
        niov = nhdr = 0;
    }
}
