# Which capabilities lbd really needs under packaging/lbd.service: runs in
# the VM in place of run.sh for the ignored test vm_capabilities
# (tests/tests/vm_systemd.rs; run it by hand, about two minutes), starts
# the unit with each capability of its CapabilityBoundingSet= removed in
# turn, fresh (no pins) and adopting (pins of the previous agent), and
# reports on the second serial port.
exec >/dev/ttyS1 2>&1
set -u
say() { echo "lb-vm: $*"; }
cp -a /mnt/stage/root/. / && systemctl daemon-reload
ip link add lb0 type veth peer name lb0p && ip link set lb0 up && ip link set lb0p up
ip addr add 198.51.100.2/24 dev lb0
all=$(systemctl show -p CapabilityBoundingSet --value lbd.service)
say "bounding set of the unit: $all"
dropin=/run/systemd/system/lbd.service.d
mkdir -p "$dropin"
attempt() {
    if timeout 90 systemctl start lbd.service && [ "$(systemctl is-active lbd.service)" = active ]; then
        echo ok
    else
        echo FAIL
    fi
}
try() {
    printf '[Service]\nRestart=no\nCapabilityBoundingSet=\nCapabilityBoundingSet=%s\n' "$2" > "$dropin/caps.conf"
    systemctl daemon-reload
    /usr/local/sbin/lbd stop --detach >/dev/null 2>&1
    journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1
    fresh=$(attempt)
    systemctl stop lbd.service; systemctl reset-failed lbd.service 2>/dev/null
    adopt=$(attempt)
    systemctl kill -s HUP lbd.service 2>/dev/null; sleep 3
    reload=$(journalctl -u lbd.service -o cat | grep -c "config reloaded")
    systemctl stop lbd.service; systemctl reset-failed lbd.service 2>/dev/null
    say "without $1: fresh start $fresh, adopting start $adopt, reloads logged $reload"
    if [ "$fresh$adopt" != okok ]; then
        journalctl -u lbd.service -o cat | grep -iE "error|denied|not permitted|lbd:" | tail -4 | sed 's/^/lb-vm:     /'
    fi
}
try nothing "$all"
for cap in $all; do
    try "$cap" "$(echo "$all" | tr ' ' '\n' | grep -vx "$cap" | tr '\n' ' ')"
done
say "probe done"
