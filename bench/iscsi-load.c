/* bench/iscsi-load.c — a raw iSCSI initiator in C for bench.sh and ab.sh, with
 * two modes sharing one login and one PDU reader:
 *
 *   iscsi-load lat  HOST PORT TARGET_IQN LUN COUNT [--warmup N] [--write]
 *     latency percentiles at queue depth 1 (formerly bench/qd1lat.c): prints
 *     "p50_us p99_us mean_us count", the time from the send of one READ(10) of
 *     8 blocks (or WRITE(10) with its 4 KiB as immediate data) to the arrival
 *     of its status, over sequential LBAs wrapping at 1 GiB.
 *
 *   iscsi-load load HOST PORT TARGET_IQN LUN [--qd N] [--bs BYTES] [--write]
 *                   [--rand] [--time SECS] [--fill]
 *     pipelined load: N commands outstanding on one session (CmdSN never past
 *     the target's MaxCmdSN), READ(10)/WRITE(10) of BYTES (default 4096, QD 32,
 *     5 s, sequential) at random (--rand: aligned, uniform) or sequential LBAs
 *     over the whole LU (READ CAPACITY). Prints "IOPS COUNT MB/s CPU_US_PER_IO"
 *     (the last is this process's own user+system CPU over its I/Os). Every
 *     response must be GOOD with the full transfer, or it exits 1 loudly.
 *     --fill (sequential only) stops after one pass over the whole LU, or at
 *     SECS: the benchmarks' pre-write of a ramdisk, whose memory the kernel
 *     (here, a VM's host) hands out at only ~0.5 GB/s on first touch, so a
 *     fixed time did not reach its end.
 *
 * Why: qemu-img bench spends ~8.8 µs CPU per 4 KiB write on one thread and
 * caps the write rows near 110k IOPS on two cores; this costs a few hundred ns
 * per command (commands batched into one sendmsg, responses parsed from one
 * large recv), so the target's limit shows.
 *
 * Writes send what the negotiated keys allow unsolicited: immediate data up to
 * min(FirstBurstLength, target's MaxRecvDataSegmentLength) when
 * ImmediateData=Yes, then Data-Out up to FirstBurstLength when InitialR2T=No;
 * the rest goes in answer to R2Ts (Data-Out PDUs of at most the target's
 * MaxRecvDataSegmentLength, DataSN from 0 per R2T). Login goes straight to the
 * operational stage (no authentication) with the keys bench.sh gives both
 * targets; the target's answers are parsed. NOP-In pings are answered. Built
 * with `cc -O2`; no library beyond libc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BHS 48
#define XFER 4096
#define RXCAP (4 << 20)
#define MAXQD 1024
#define OUR_MRDSL 262144

static int sock;
static uint8_t rx[RXCAP];
static size_t rx_start, rx_end;

/* Negotiated (defaults per RFC 7143 when the target does not answer a key). */
static uint32_t t_mrdsl = 8192, first_burst = 65536, max_burst = 262144;
static int initial_r2t = 1, immediate = 1;

static void die(const char *what)
{
    fprintf(stderr, "iscsi-load: %s\n", what);
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

/* A whole PDU already in the receive buffer (no system call), or NULL. */
static const uint8_t *take_pdu(const uint8_t **data, size_t *dlen)
{
    size_t have = rx_end - rx_start;
    if (have < BHS)
        return NULL;
    const uint8_t *h = rx + rx_start;
    size_t ahs = (size_t)h[4] * 4, ds = be32(h + 4) & 0xffffff;
    size_t total = BHS + ahs + ((ds + 3) & ~(size_t)3);
    if (total > RXCAP)
        die("PDU larger than the receive buffer");
    if (have < total)
        return NULL;
    rx_start += total;
    *data = h + BHS + ahs;
    *dlen = ds;
    return h;
}

/* Next whole PDU, reading (one large recv at a time) until it is complete.
 * Valid until the next call. */
static const uint8_t *recv_pdu(const uint8_t **data, size_t *dlen)
{
    for (;;) {
        const uint8_t *h = take_pdu(data, dlen);
        if (h)
            return h;
        size_t have = rx_end - rx_start;
        /* Keep room for the largest PDU: move the partial one to the front. */
        if (rx_start > 0 && RXCAP - rx_start < (size_t)OUR_MRDSL * 2 + 4096) {
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

/* Records the target's answer to the keys we care about. */
static void parse_keys(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n;) {
        const char *k = (const char *)d + i;
        size_t l = strnlen(k, n - i);
        const char *v = memchr(k, '=', l);
        if (v) {
            size_t kl = (size_t)(v - k);
            v++;
#define KEY(name) (kl == sizeof name - 1 && !memcmp(k, name, kl))
            if (KEY("MaxRecvDataSegmentLength"))
                t_mrdsl = (uint32_t)atol(v);
            else if (KEY("FirstBurstLength"))
                first_burst = (uint32_t)atol(v);
            else if (KEY("MaxBurstLength"))
                max_burst = (uint32_t)atol(v);
            else if (KEY("InitialR2T"))
                initial_r2t = !strncmp(v, "Yes", 3);
            else if (KEY("ImmediateData"))
                immediate = !strncmp(v, "Yes", 3);
#undef KEY
        }
        i += l + 1;
    }
}

/* Login straight into the operational stage; returns StatSN, sets *cmdsn and
 * *maxcmdsn. */
static uint32_t login(const char *iqn, uint32_t *cmdsn, uint32_t *maxcmdsn)
{
    char keys[1024];
    int n = snprintf(keys, sizeof keys,
                     "InitiatorName=iqn.2026-12.org.rtarget:iscsi-load%c"
                     "SessionType=Normal%cTargetName=%s%cHeaderDigest=None%cDataDigest=None%c"
                     "MaxRecvDataSegmentLength=%d%cInitialR2T=No%cImmediateData=Yes%c"
                     "FirstBurstLength=262144%cMaxBurstLength=262144%cMaxOutstandingR2T=1%c"
                     "ErrorRecoveryLevel=0%c",
                     0, 0, iqn, 0, 0, 0, OUR_MRDSL, 0, 0, 0, 0, 0, 0, 0);
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
            fprintf(stderr, "iscsi-load: login failed: class %d detail %d\n", r[36], r[37]);
            exit(1);
        }
        parse_keys(data, dlen);
        uint32_t statsn = be32(r + 24);
        *cmdsn = be32(r + 28);
        *maxcmdsn = be32(r + 32);
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

/* Answers a NOP-In that asks for one (TTT set); returns 1 if r was a NOP-In. */
static int nop_in(const uint8_t *r, uint32_t cmdsn, uint32_t statsn)
{
    if ((r[0] & 0x3f) != 0x20)
        return 0;
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
    return 1;
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

static void connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        die("cannot resolve the target address");
    sock = socket(ai->ai_family, SOCK_STREAM, 0);
    if (sock < 0 || connect(sock, ai->ai_addr, ai->ai_addrlen) != 0)
        die("cannot connect");
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int lat_main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: iscsi-load lat HOST PORT TARGET_IQN LUN COUNT [--warmup N] [--write]\n");
        return 2;
    }
    long count = atol(argv[4]), warm = 1000;
    int write = 0;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warm = atol(argv[++i]);
        else if (!strcmp(argv[i], "--write"))
            write = 1;
        else {
            fprintf(stderr, "iscsi-load: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (count <= 0)
        die("COUNT must be positive");
    unsigned lun = (unsigned)atoi(argv[3]);
    connect_to(argv[0], argv[1]);
    uint32_t cmdsn, maxcmdsn, statsn = login(argv[2], &cmdsn, &maxcmdsn);
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
            if (nop_in(r, cmdsn, statsn))
                continue;
            if (op != 0x25) {
                fprintf(stderr, "iscsi-load: unexpected opcode %#x\n", op);
                return 1;
            }
        }
        uint64_t t1 = now_ns();
        /* The first command after login reports a unit attention. */
        if (r[3] != 0 && i >= warm) {
            fprintf(stderr, "iscsi-load: status %#x\n", r[3]);
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

/* ---- load mode ---------------------------------------------------------- */

/* Outgoing PDUs are queued as iovecs (headers in an arena, payloads pointing
 * into one constant pattern buffer) and flushed with few sendmsg calls. */
#define TXIOV 1024
#define HDRS (TXIOV / 2)
static struct iovec txv[TXIOV];
static uint8_t hdr_arena[HDRS][BHS];
static int ntx, nhdr;
static uint8_t *pattern;   /* OUR data: max(FirstBurst, MaxBurst, t_mrdsl) of 0x5a */

static void flush_tx(void)
{
    struct iovec *v = txv;
    int n = ntx;
    while (n > 0) {
        struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(sock, &m, MSG_NOSIGNAL);
        if (w <= 0)
            die("send failed");
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
    ntx = nhdr = 0;
}

/* A zeroed header in the arena, queued with LEN bytes of pattern after it. */
static uint8_t *queue_pdu(uint32_t len)
{
    if (ntx + 2 > TXIOV || nhdr + 1 > HDRS)
        flush_tx();
    uint8_t *h = hdr_arena[nhdr++];
    memset(h, 0, BHS);
    put24(h + 5, len);
    txv[ntx++] = (struct iovec){h, BHS};
    if (len)   /* every length used is a multiple of 4: no padding */
        txv[ntx++] = (struct iovec){pattern, len};
    return h;
}

struct slot {
    uint32_t itt, lba, got;  /* got: Data-In bytes received */
    int busy;
};

struct load {
    unsigned lun, qd, blocks;   /* blocks per command */
    uint32_t bs, cmdsn, maxcmdsn, statsn;
};

static int sn_le(uint32_t a, uint32_t b) { return (int32_t)(b - a) >= 0; }

/* Data-Out PDUs for [off, off+len) of command ITT, answering TTT. */
static void data_out(const struct load *L, uint32_t itt, uint32_t ttt, uint32_t off, uint32_t len)
{
    for (uint32_t sn = 0, done = 0; done < len; sn++) {
        uint32_t n = len - done < t_mrdsl ? len - done : t_mrdsl;
        uint8_t *h = queue_pdu(n);
        h[0] = 0x05;
        h[1] = done + n == len ? 0x80 : 0;
        h[9] = (uint8_t)L->lun;
        h[8] = (uint8_t)(L->lun >> 8 & 0x3f);
        put32(h + 16, itt);
        put32(h + 20, ttt);
        put32(h + 28, L->statsn + 1);
        put32(h + 36, sn);
        put32(h + 40, off + done);
        done += n;
    }
}

static void queue_cmd(struct load *L, struct slot *s, int write, uint8_t op, const uint8_t *cdb_tail)
{
    uint32_t imm = 0, unsol = 0;
    if (write) {
        uint32_t cap = first_burst < L->bs ? first_burst : L->bs;
        if (immediate)
            imm = cap < t_mrdsl ? cap : t_mrdsl;
        if (!initial_r2t)
            unsol = cap - imm;
    }
    uint8_t *h = queue_pdu(imm);
    h[0] = 0x01;
    h[1] = (unsol ? 0 : 0x80) | 0x01 | (write ? 0x20 : (op == 0x28 || op == 0x25 ? 0x40 : 0));
    h[8] = (uint8_t)(L->lun >> 8 & 0x3f);
    h[9] = (uint8_t)L->lun;
    put32(h + 16, s->itt);
    put32(h + 20, op == 0x25 ? 8 : L->bs);
    put32(h + 24, L->cmdsn++);
    put32(h + 28, L->statsn + 1);
    h[32] = op;
    if (cdb_tail)
        memcpy(h + 34, cdb_tail, 8);
    if (unsol)
        data_out(L, s->itt, 0xffffffffu, imm, unsol);
    s->busy = 1;
    s->got = 0;
}

/* Window bookkeeping from any target PDU that carries ExpCmdSN/MaxCmdSN. */
static void note_sn(struct load *L, const uint8_t *r)
{
    uint32_t exp = be32(r + 28), max = be32(r + 32);
    if (sn_le(exp - 1, max) && sn_le(L->maxcmdsn, max))
        L->maxcmdsn = max;
}

/* READ CAPACITY(10) at QD1 until GOOD (the first command after login may
 * report a unit attention): returns the block length, sets *nblocks. */
static uint32_t capacity(struct load *L, uint64_t *nblocks)
{
    struct slot s = {.itt = 0x7fffffff};
    uint32_t saved = L->bs;
    for (int tries = 0; tries < 4; tries++) {
        if (!sn_le(L->cmdsn, L->maxcmdsn))
            die("CmdSN window closed at start");
        L->bs = 8;
        queue_cmd(L, &s, 0, 0x25, NULL);
        L->bs = saved;
        flush_tx();
        uint8_t cap[8] = {0};
        for (;;) {
            const uint8_t *r, *d;
            size_t dl;
            r = recv_pdu(&d, &dl);
            int op = r[0] & 0x3f;
            if (nop_in(r, L->cmdsn, L->statsn))
                continue;
            if (op == 0x25 && dl >= 8)
                memcpy(cap, d, 8);
            if (op == 0x21 || (op == 0x25 && (r[1] & 1))) {
                note_sn(L, r);
                L->statsn = be32(r + 24);
                if (r[3] == 0) {
                    *nblocks = (uint64_t)be32(cap) + 1;
                    return be32(cap + 4);
                }
                break;
            }
            if (op != 0x25)
                die("unexpected PDU during READ CAPACITY");
        }
    }
    die("READ CAPACITY did not succeed");
    return 0;
}

/* Dies naming the PDU; a SCSI Response's sense data (SenseLength, then
 * fixed or descriptor format) is decoded to key/ASC/ASCQ, which say why a
 * command failed (e.g. 5/24/00 for a transfer above the LU's limit). */
static void bad_status_sense(const uint8_t *r, const uint8_t *d, size_t dl, const char *what)
{
    char sense[64] = "";
    if ((r[0] & 0x3f) == 0x21 && dl >= 2) {
        size_t sl = (size_t)d[0] << 8 | d[1];
        const uint8_t *s = d + 2;
        if (sl > dl - 2)
            sl = dl - 2;
        if (sl >= 14 && (s[0] & 0x7e) == 0x70)
            snprintf(sense, sizeof sense, " sense %x/%02x/%02x", s[2] & 0xf, s[12], s[13]);
        else if (sl >= 4 && (s[0] & 0x7e) == 0x72)
            snprintf(sense, sizeof sense, " sense %x/%02x/%02x", s[1] & 0xf, s[2], s[3]);
    }
    fprintf(stderr, "iscsi-load: FAILED: %s (opcode %#x flags %#x response %#x status %#x ITT %#x%s)\n",
            what, r[0] & 0x3f, r[1], r[2], r[3], be32(r + 16), sense);
    exit(1);
}

static void bad_status(const uint8_t *r, const char *what) { bad_status_sense(r, NULL, 0, what); }

static int load_main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: iscsi-load load HOST PORT TARGET_IQN LUN [--qd N] [--bs BYTES] "
                        "[--write] [--rand] [--time SECS] [--fill]\n");
        return 2;
    }
    struct load L = {.lun = (unsigned)atoi(argv[3]), .qd = 32, .bs = 4096};
    int write = 0, rnd = 0, fill = 0;
    double secs = 5;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--qd") && i + 1 < argc)
            L.qd = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bs") && i + 1 < argc)
            L.bs = (uint32_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--write"))
            write = 1;
        else if (!strcmp(argv[i], "--rand"))
            rnd = 1;
        else if (!strcmp(argv[i], "--fill"))
            fill = 1;
        else {
            fprintf(stderr, "iscsi-load: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (fill && rnd)
        die("--fill is one sequential pass: not with --rand");
    if (L.qd < 1 || L.qd > MAXQD || L.bs < 512 || L.bs % 512 || L.bs > (16u << 20) || secs <= 0)
        die("need 1 <= QD <= 1024, BYTES a multiple of 512 up to 16 MiB, SECS > 0");
    connect_to(argv[0], argv[1]);
    L.statsn = login(argv[2], &L.cmdsn, &L.maxcmdsn);
    if (t_mrdsl < 512 || t_mrdsl % 4 || first_burst % 4)
        die("negotiated lengths not usable");
    uint32_t patlen = first_burst > max_burst ? first_burst : max_burst;
    if (patlen < t_mrdsl)
        patlen = t_mrdsl;
    if (patlen > L.bs)
        patlen = L.bs;
    pattern = malloc(patlen);
    if (!pattern)
        die("out of memory");
    memset(pattern, 0x5a, patlen);

    uint64_t nblocks;
    uint32_t blen = capacity(&L, &nblocks);
    if (blen == 0 || L.bs % blen)
        die("BYTES is not a multiple of the LU's block length");
    L.blocks = L.bs / blen;
    if (L.blocks > 0xffff || nblocks > 0xffffffffu)
        die("transfer or LU too large for READ(10)/WRITE(10)");
    uint64_t ios_in_lu = nblocks / L.blocks;
    if (ios_in_lu == 0)
        die("LU smaller than one transfer");

    static struct slot slots[MAXQD];
    uint32_t gen = 0;
    uint64_t seq = 0, rng = 0x9e3779b97f4a7c15ull, done = 0, bytes = 0;
    unsigned outstanding = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(secs * 1e9), tend = t0;
    int stopping = 0;
    uint8_t op = write ? 0x2a : 0x28;
    while (!stopping || outstanding > 0) {
        /* Fill every free slot the CmdSN window allows. */
        if (!stopping) {
            for (unsigned i = 0; i < L.qd && sn_le(L.cmdsn, L.maxcmdsn); i++) {
                struct slot *s = &slots[i];
                if (s->busy)
                    continue;
                if (fill && seq >= ios_in_lu) {
                    stopping = 1;
                    break;
                }
                uint64_t k;
                if (rnd) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    k = rng % ios_in_lu;
                } else {
                    k = seq++ % ios_in_lu;
                }
                s->lba = (uint32_t)(k * L.blocks);
                s->itt = (++gen << 10 | i) & 0x7fffffffu;
                uint8_t tail[8] = {0};
                put32(tail, s->lba);
                tail[5] = (uint8_t)(L.blocks >> 8);
                tail[6] = (uint8_t)L.blocks;
                queue_cmd(&L, s, write, op, tail);
                outstanding++;
            }
        }
        flush_tx();
        if (stopping && outstanding == 0)   /* --fill done: nothing to wait for */
            break;
        if (outstanding == 0 && !stopping && !sn_le(L.cmdsn, L.maxcmdsn)) {
            /* Window closed with nothing in flight: wait for a NOP-In. */
            const uint8_t *r, *d;
            size_t dl;
            r = recv_pdu(&d, &dl);
            if (!nop_in(r, L.cmdsn, L.statsn))
                bad_status(r, "unexpected PDU with nothing outstanding");
            note_sn(&L, r);
            continue;
        }
        /* One blocking read, then every PDU already buffered. */
        const uint8_t *r, *d;
        size_t dl;
        r = recv_pdu(&d, &dl);
        do {
            int rop = r[0] & 0x3f;
            if (nop_in(r, L.cmdsn, L.statsn)) {
                note_sn(&L, r);
                continue;
            }
            uint32_t itt = be32(r + 16);
            struct slot *s = &slots[itt & (MAXQD - 1)];
            if ((itt & (MAXQD - 1)) >= L.qd || !s->busy || s->itt != itt)
                bad_status(r, "response for an unknown ITT");
            note_sn(&L, r);
            if (rop == 0x31) {   /* R2T */
                uint32_t off = be32(r + 40), len = be32(r + 44);
                if (!write || off + len > L.bs || len > max_burst)
                    bad_status(r, "R2T out of range");
                data_out(&L, itt, be32(r + 20), off, len);
                continue;
            }
            int status_in = 0;
            if (rop == 0x25) {
                s->got += (uint32_t)dl;
                status_in = r[1] & 0x01;
            } else if (rop != 0x21) {
                bad_status(r, "unexpected PDU");
            }
            if (rop == 0x21 || status_in) {
                if ((rop == 0x21 && r[2] != 0) || r[3] != 0)
                    bad_status_sense(r, d, dl, "status not GOOD");
                if (r[1] & 0x06)
                    bad_status(r, "residual (under/overflow)");
                if (!write && s->got != L.bs)
                    bad_status(r, "short Data-In");
                L.statsn = be32(r + 24);
                s->busy = 0;
                outstanding--;
                done++;
                bytes += L.bs;
            }
        } while ((r = take_pdu(&d, &dl)) != NULL);
        tend = now_ns();
        if (tend >= deadline)
            stopping = 1;
    }
    getrusage(RUSAGE_SELF, &ru1);
    double el = (double)(tend - t0) / 1e9;
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    if (done == 0)
        die("no I/O completed");
    printf("%.0f %llu %.1f %.2f\n", (double)done / el, (unsigned long long)done, (double)bytes / el / 1e6,
           cpu * 1e6 / (double)done);
    close(sock);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "lat"))
        return lat_main(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "load"))
        return load_main(argc - 2, argv + 2);
    fprintf(stderr, "usage: iscsi-load lat|load HOST PORT TARGET_IQN LUN ... (see bench/iscsi-load.c)\n");
    return 2;
}
