/* bench/qd1lat.c — latency percentiles of 4 KiB reads (or writes) at queue
 * depth 1, from a raw iSCSI initiator in C: the same exchange as
 * bench/qd1lat.py, but the initiator's own cost per command is a send, a
 * recv and two clock reads, so the target's share of the round trip shows.
 *
 * usage: qd1lat HOST PORT TARGET_IQN LUN COUNT [--warmup N] [--write]
 * prints "p50_us p99_us mean_us count": the time from the send of one
 * READ(10) of 8 blocks (or WRITE(10) with its 4 KiB as immediate data) to
 * the arrival of its status, over sequential LBAs wrapping at 1 GiB.
 *
 * Login goes straight to the operational stage (no authentication) with the
 * keys bench.sh gives both targets (InitialR2T=No, ImmediateData=Yes, 256 KiB
 * segments and bursts), so a 4 KiB write needs no R2T. NOP-In pings are
 * answered. Built by bench.sh with `cc -O2`; no library beyond libc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BHS 48
#define XFER 4096
#define RXCAP (1 << 20)

static int sock;
static uint8_t rx[RXCAP];
static size_t rx_start, rx_end;

static void die(const char *what)
{
    fprintf(stderr, "qd1lat: %s\n", what);
    exit(1);
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put24(uint8_t *p, uint32_t v) { p[0] = v >> 16; p[1] = v >> 8; p[2] = v; }

static void send_all(const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(sock, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            die("send failed");
        p += w;
        n -= (size_t)w;
    }
}

/* Next whole PDU from the receive buffer, reading (one recv at a time) until
 * it is complete. Returns its header; data and dlen get its data segment. Valid
 * until the next call. */
static const uint8_t *recv_pdu(const uint8_t **data, size_t *dlen)
{
    for (;;) {
        size_t have = rx_end - rx_start;
        if (have >= BHS) {
            const uint8_t *h = rx + rx_start;
            size_t ahs = (size_t)h[4] * 4, ds = be32(h + 4) & 0xffffff;
            size_t total = BHS + ahs + ((ds + 3) & ~(size_t)3);
            if (total > RXCAP)
                die("PDU larger than the receive buffer");
            if (have >= total) {
                rx_start += total;
                *data = h + BHS + ahs;
                *dlen = ds;
                return h;
            }
            if (rx_start + total > RXCAP) {
                memmove(rx, rx + rx_start, have);
                rx_start = 0;
                rx_end = have;
            }
        } else if (rx_start == rx_end) {
            rx_start = rx_end = 0;
        } else if (RXCAP - rx_start < BHS) {
            memmove(rx, rx + rx_start, have);
            rx_start = 0;
            rx_end = have;
        }
        ssize_t n = recv(sock, rx + rx_end, RXCAP - rx_end, 0);
        if (n <= 0)
            die("connection closed");
        rx_end += (size_t)n;
    }
}

/* Login straight into the operational stage; returns StatSN, sets *cmdsn. */
static uint32_t login(const char *iqn, uint32_t *cmdsn)
{
    char keys[1024];
    int n = snprintf(keys, sizeof keys,
                     "InitiatorName=iqn.2026-12.org.rtarget:qd1lat%c"
                     "SessionType=Normal%cTargetName=%s%cHeaderDigest=None%cDataDigest=None%c"
                     "MaxRecvDataSegmentLength=262144%cInitialR2T=No%cImmediateData=Yes%c"
                     "FirstBurstLength=262144%cMaxBurstLength=262144%cMaxOutstandingR2T=1%c"
                     "ErrorRecoveryLevel=0%c",
                     0, 0, iqn, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    if (n <= 0 || n >= (int)sizeof keys - 4)
        die("target name too long");
    size_t klen = (size_t)n, padded = (klen + 3) & ~(size_t)3;
    uint8_t pdu[BHS + sizeof keys] = {0};
    pdu[0] = 0x43;                    /* Login Request, immediate */
    pdu[1] = 0x80 | (1 << 2) | 3;     /* Transit, CSG=operational, NSG=full feature */
    put24(pdu + 5, (uint32_t)klen);
    memcpy(pdu + 8, "\x80\x12\x34\x56\x00\x01", 6); /* ISID (random format) */
    memcpy(pdu + BHS, keys, klen);
    size_t len = BHS + padded;
    for (int round = 0; round < 8; round++) {
        send_all(pdu, len);
        const uint8_t *data, *r;
        size_t dlen;
        r = recv_pdu(&data, &dlen);
        if ((r[0] & 0x3f) != 0x23 || r[36] != 0) {
            fprintf(stderr, "qd1lat: login failed: class %d detail %d\n", r[36], r[37]);
            exit(1);
        }
        uint32_t statsn = be32(r + 24);
        *cmdsn = be32(r + 28);
        if ((r[1] & 0x80) && (r[1] & 3) == 3)
            return statsn;
        /* The target wants another round (it declared keys of its own):
         * nothing more to say, ask again for the transition. */
        put24(pdu + 5, 0);
        memcpy(pdu + 14, r + 14, 2); /* TSIH */
        put32(pdu + 28, statsn + 1);  /* ExpStatSN */
        len = BHS;
    }
    die("login did not reach full feature phase");
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: qd1lat HOST PORT TARGET_IQN LUN COUNT [--warmup N] [--write]\n");
        return 2;
    }
    long count = atol(argv[5]), warm = 1000;
    int write = 0;
    for (int i = 6; i < argc; i++) {
        if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warm = atol(argv[++i]);
        else if (!strcmp(argv[i], "--write"))
            write = 1;
        else {
            fprintf(stderr, "qd1lat: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (count <= 0)
        die("COUNT must be positive");
    unsigned lun = (unsigned)atoi(argv[4]);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
        die("cannot resolve the target address");
    sock = socket(ai->ai_family, SOCK_STREAM, 0);
    if (sock < 0 || connect(sock, ai->ai_addr, ai->ai_addrlen) != 0)
        die("cannot connect");
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    uint32_t cmdsn, statsn = login(argv[3], &cmdsn);
    double *lat = malloc(sizeof(double) * (size_t)count);
    static uint8_t cmd[BHS + XFER];
    memset(cmd + BHS, 0x5a, XFER);
    if (!lat)
        die("out of memory");
    for (long i = 0; i < warm + count; i++) {
        uint32_t lba = (uint32_t)((i * 8) % (2 * 1024 * 1024));
        memset(cmd, 0, BHS);
        cmd[0] = 0x01;                          /* SCSI Command */
        cmd[1] = 0x80 | 0x01 | (write ? 0x20 : 0x40); /* F, simple, W or R */
        if (write)
            put24(cmd + 5, XFER);              /* immediate data */
        cmd[8] = (uint8_t)(lun >> 8 & 0x3f);
        cmd[9] = (uint8_t)lun;
        put32(cmd + 16, (uint32_t)i + 1);       /* ITT */
        put32(cmd + 20, XFER);
        put32(cmd + 24, cmdsn);
        put32(cmd + 28, statsn + 1);
        cmd[32] = write ? 0x2a : 0x28;          /* WRITE(10) / READ(10) */
        put32(cmd + 34, lba);
        cmd[40] = 8;                            /* transfer length: 8 blocks */
        const uint8_t *r, *data;
        size_t dlen;
        uint64_t t0 = now_ns();
        send_all(cmd, write ? BHS + XFER : BHS);
        for (;;) {
            r = recv_pdu(&data, &dlen);
            int op = r[0] & 0x3f;
            if (op == 0x25 && (r[1] & 0x01))    /* Data-In with status */
                break;
            if (op == 0x21)                     /* SCSI Response */
                break;
            if (op == 0x20) {                   /* NOP-In: answer a ping (TTT set) */
                if (be32(r + 20) != 0xffffffffu) {
                    uint8_t nop[BHS] = {0};
                    nop[0] = 0x40;
                    nop[1] = 0x80;
                    memcpy(nop + 2, r + 2, 14);
                    put32(nop + 16, 0xffffffffu);
                    memcpy(nop + 20, r + 20, 4);
                    put32(nop + 24, cmdsn);
                    put32(nop + 28, statsn + 1);
                    send_all(nop, BHS);
                }
                continue;
            }
            if (op != 0x25) {
                fprintf(stderr, "qd1lat: unexpected opcode %#x\n", op);
                return 1;
            }
        }
        uint64_t t1 = now_ns();
        /* The first command after login reports a unit attention. */
        if (r[3] != 0 && i >= warm) {
            fprintf(stderr, "qd1lat: status %#x\n", r[3]);
            return 1;
        }
        statsn = be32(r + 24);
        cmdsn++;
        if (i >= warm)
            lat[i - warm] = (double)(t1 - t0) / 1000.0;
    }
    double sum = 0;
    for (long i = 0; i < count; i++)
        sum += lat[i];
    qsort(lat, (size_t)count, sizeof *lat, cmp);
    long i50 = count / 2, i99 = (long)(count * 0.99);
    if (i99 >= count)
        i99 = count - 1;
    printf("%.1f %.1f %.1f %ld\n", lat[i50], lat[i99], sum / count, count);
    close(sock);
    return 0;
}
