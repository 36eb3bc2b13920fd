# bench/cc.sh — the TCP congestion control a benchmark runs with (sourced by the
# bench scripts; every target and the initiator get the same).
#
# Why the benchmarks choose it: on loopback BBR's bandwidth estimate follows the
# receiver's own pace (min_rtt is ~1 µs, so its cwnd is a few segments and its
# pacing rate what the last round trips delivered): a sender is paced at the speed
# of the application at the other end, whoever that is.  With BBR as the host's
# default (this project's CI host) the 1 MiB rows measured the pacing as much as the
# target: in one run (2 rounds, ram/ramdisk) cubic gave tgt +8-20% and rtarget
# +10-46%, with rtarget's CPU per 1 MiB READ down from ~240-290 to ~200 µs.  The
# benchmarks therefore run with the kernel's built-in default (cubic: no pacing
# without the fq qdisc) unless told otherwise, and print which one they ran with.
#
# bench_cc NAME    NAME = a congestion control (cubic, reno, bbr) or "system" (keep the
#                  host's); sets net.ipv4.tcp_congestion_control (new sockets only) and
#                  remembers the old value; BENCH_CC is what the run uses
# bench_cc_restore put the host's back (call it from the EXIT trap)
BENCH_CC_OLD='' BENCH_CC=''
bench_cc() {
    local want=$1 cur
    cur=$(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo unknown)
    BENCH_CC=$cur
    [[ $want == system || $want == "$cur" ]] && return 0
    if sysctl -qw net.ipv4.tcp_congestion_control="$want" 2>/dev/null; then
        BENCH_CC_OLD=$cur BENCH_CC=$want
    else
        echo "bench: cannot set TCP congestion control $want (not root, or no tcp_$want); running with $cur" >&2
    fi
}
bench_cc_restore() {
    [[ -n $BENCH_CC_OLD ]] || return 0
    sysctl -qw net.ipv4.tcp_congestion_control="$BENCH_CC_OLD" 2>/dev/null
    BENCH_CC_OLD=''
}
