/* bench/cpu-probe.c — two probes of the machine under a benchmark round
 * (bench/qd32-probe.sh runs them before and after each round):
 *
 *   cpu-probe pingpong  cache-line round trip between CPU 0 and CPU 1, ns
 *                       (min and median of 5 x 20000): a vCPU pair the host
 *                       moved onto cores without a shared cache shows here
 *   cpu-probe smt       ns per iteration of a compute loop on CPU 0 and on
 *                       CPU 1 alone, then on both at once; a ratio well over
 *                       1 means the two vCPUs share a host core (SMT), a
 *                       slower "alone" that the host core is shared
 *
 * Why: ramdisk 4 KiB reads at QD32 ran in two modes (~740k and ~500k IOPS)
 * from round to round; these tell a machine-level change from one of
 * rtarget's. Built with `cc -O2 -pthread`. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void pin(int c)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(c, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile long line[16] __attribute__((aligned(64)));

static void *bounce(void *arg)
{
    (void)arg;
    pin(1);
    for (;;) {
        long v = line[0];
        if (v < 0)
            break;
        if (v & 1)
            line[0] = v + 1;
    }
    return NULL;
}

static void pingpong(void)
{
    pthread_t t;
    double r[5];
    pin(0);
    pthread_create(&t, NULL, bounce, NULL);
    for (int k = 0; k < 5; k++) {
        double t0 = now_ns();
        for (int i = 0; i < 20000; i++) {
            long v = line[0] + 1;
            line[0] = v;
            while (line[0] == v)
                ;
        }
        r[k] = (now_ns() - t0) / 20000;
    }
    line[0] = -2;
    pthread_join(t, NULL);
    qsort(r, 5, sizeof r[0], cmp);
    printf("pingpong %.0f %.0f\n", r[0], r[2]);
}

#define ITERS 20000000L
static volatile unsigned long sink;

static double work(int cpu)
{
    unsigned long x = 88172645463325252ul, a = 0, b = 1;
    pin(cpu);
    double t0 = now_ns();
    for (long i = 0; i < ITERS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        a += x * b;
        b ^= a >> 3;
    }
    sink = a + b;
    return (now_ns() - t0) / ITERS;
}

static void *work1(void *p)
{
    *(double *)p = work(1);
    return NULL;
}

static void smt(void)
{
    double a0 = work(0), a1 = work(1), b0, b1;
    pthread_t t;
    pthread_create(&t, NULL, work1, &b1);
    b0 = work(0);
    pthread_join(t, NULL);
    printf("smt alone %.2f %.2f both %.2f %.2f ratio %.2f\n", a0, a1, b0, b1, (b0 + b1) / (a0 + a1));
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "pingpong"))
        pingpong();
    else if (argc == 2 && !strcmp(argv[1], "smt"))
        smt();
    else {
        fprintf(stderr, "usage: cpu-probe pingpong|smt\n");
        return 2;
    }
    return 0;
}
