# Runs inside the VM of tests/tests/vm_systemd.rs, from the stage disk
# (mounted read-only at /mnt/stage), as root under systemd. The stage holds
# root/ (made by `cargo xtask install --root`, plus the test's config as
# /etc/lb/lbd.toml) and lbd-reload.toml. Every line for the host starts
# with "lb-vm: " on the second serial port; the last one is PASS or FAIL.
exec >/dev/ttyS1 2>&1
set -u
stage=/mnt/stage

say() { echo "lb-vm: $*"; }
journal() { journalctl -u lbd.service --no-pager -o cat; }
fail() {
    say "FAIL: $*"
    systemctl status lbd.service --no-pager 2>&1 | sed 's/^/lb-vm-status: /'
    journalctl -u lbd.service --no-pager -o short-monotonic | tail -60 | sed 's/^/lb-vm-journal: /'
    exit 1
}
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# Waits up to $1 seconds for the journal of lbd to contain $2.
wait_journal() {
    i=0
    while [ "$i" -lt $(( $1 * 10 )) ]; do
        journal | grep -qF -- "$2" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

say "kernel $(uname -r), $(systemctl --version | head -1)"
cp -a "$stage/root/." / || fail "copying the installed files into /"
systemctl daemon-reload || fail "systemctl daemon-reload"
systemd-analyze verify lbd.service || fail "systemd-analyze verify lbd.service"

# The node's link: a veth (generic XDP), the backends' network on-link;
# its peer in the namespace "peer" plays a client of the VIP and the
# backend (no listener: it answers the SYN with a RST).
ip netns add peer || fail "creating the namespace peer"
ip link add lb0 type veth peer name lb0p netns peer || fail "creating veth lb0"
ip link set lb0 up && ip -n peer link set lb0p up || fail "bringing lb0 up"
ip -n peer addr add 192.0.2.99/24 dev lb0p || fail "addressing lb0p"
ip -n peer addr add 198.51.100.21/24 dev lb0p || fail "addressing lb0p"
ip addr add 198.51.100.2/24 dev lb0 || fail "addressing lb0"

# Type=notify: `systemctl start` returns once lbd sent READY=1.
t=$(date +%s%N)
systemctl start lbd.service || fail "systemctl start lbd.service"
say "start: active after $(ms_since "$t") ms"
[ "$(systemctl is-active lbd.service)" = active ] || fail "lbd.service is not active after start"
ip -d link show lb0 | grep -q xdpgeneric || fail "READY came but no XDP program is attached to lb0"
ls /sys/fs/bpf/lb/lbvm/v*/link >/dev/null || fail "READY came but the XDP link is not pinned"
ip -4 addr show dev lb0 | grep -qF 192.0.2.20/32 || fail "READY came but the VIP 192.0.2.20 is not on lb0"
status=$(systemctl show -p StatusText --value lbd.service)
say "status: $status"
case "$status" in *"1 services, 1 backends on lb0"*) ;; *) fail "unexpected STATUS= $status" ;; esac

# The program runs on this kernel: a client's SYN to the VIP opens a flow
# (backend choice, next hop, SNAT port claim: the deepest call chain). The
# first SYNs may meet the backend's neighbour entry still unresolved.
i=0
until /usr/local/sbin/lbd status --json | tr -d ' \n' | grep -q '"new_flows":[1-9]'; do
    i=$((i + 1))
    [ "$i" -le 5 ] || fail "no new flow after 5 connections to the VIP: $(/usr/local/sbin/lbd status --json | tr -d ' \n')"
    ip netns exec peer timeout 2 bash -c 'exec 3<>/dev/tcp/192.0.2.20/443' 2>/dev/null
done
events=$(/usr/local/sbin/lbd status --json | tr -d ' \n' | grep -o '"datapath_events":{[^}]*}')
say "after a SYN to the VIP: a new flow; $events"
# The first watchdog ping is sent as the agent loop starts.
i=0
while [ "$(systemctl show -p WatchdogTimestampMonotonic --value lbd.service)" = 0 ]; do
    i=$((i + 1)); [ "$i" -lt 100 ] || fail "no WATCHDOG=1 within 10 s"; sleep 0.1
done
say "watchdog: pinged"
# The journal stamps lines; lbd must not add its own timestamp.
line=$(journal | grep -F forwarding | head -1)
say "journal line: $line"
case "$line" in [0-9][0-9][0-9][0-9]-*) fail "lbd's journal lines carry their own timestamp" ;; esac
# The sandbox let it write its state and runtime files.
[ -S /run/lbd/lbvm.sock ] || fail "no control socket /run/lbd/lbvm.sock"
[ -f /var/lib/lbd/lbvm.state ] || fail "no state file /var/lib/lbd/lbvm.state"
/usr/local/sbin/lbd status >/dev/null || fail "lbd status cannot talk to the service"

# Reload: RELOADING=1 ... READY=1 around the re-read of the new config.
cp "$stage/lbd-reload.toml" /etc/lb/lbd.toml || fail "writing the new config"
t=$(date +%s%N)
systemctl reload lbd.service || fail "systemctl reload lbd.service"
wait_journal 20 "config reloaded" || fail "no 'config reloaded' in the journal after systemctl reload"
say "reload: logged after $(ms_since "$t") ms"
status=$(systemctl show -p StatusText --value lbd.service)
case "$status" in *"1 services, 2 backends on lb0"*) ;; *) fail "STATUS= after reload: $status" ;; esac
[ "$(systemctl is-active lbd.service)" = active ] || fail "lbd.service is not active after reload"
pid=$(systemctl show -p MainPID --value lbd.service)

# Stop: SIGTERM, STOPPING=1, then ExecStopPost runs `lbd stop`. systemd
# forgets the ExecStopPost status once the unit is inactive, so its debug
# log says what it ran and how that ended.
systemd-analyze log-level debug
t=$(date +%s%N)
systemctl stop lbd.service || fail "systemctl stop lbd.service"
say "stop: inactive after $(ms_since "$t") ms"
systemd-analyze log-level info
wait_journal 5 "agent stopping" || fail "lbd did not log its stop"
post=$(journal | grep -F "About to execute" | grep -F "lbd stop --config /etc/lb/lbd.toml")
[ -n "$post" ] || fail "systemd did not run ExecStopPost (lbd stop)"
say "ExecStopPost: $post"
journal | grep -qF "Control process exited, code=exited, status=0/SUCCESS" \
    || fail "ExecStopPost (lbd stop) did not exit cleanly"
result=$(systemctl show -p Result --value lbd.service)
[ "$result" = success ] || fail "the service ended with Result=$result"
kill -0 "$pid" 2>/dev/null && fail "lbd (pid $pid) still runs after stop"
say PASS
