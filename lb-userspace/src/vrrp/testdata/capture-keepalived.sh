#!/bin/bash
# How the keepalived adverts in ../captured.rs were captured (Debian keepalived 2.2.7):
# keepalived as MASTER (priority 101, vrid 11, advert_int 1, 3 VIPs) in netns vrrpcap-a
# (192.0.2.1 on veth-a), tcpdump in netns vrrpcap-b (192.0.2.2 on veth-b); each case runs
# about 6 s and ends with SIGTERM, so the last advert has priority 0.
# Run as root: bash capture-keepalived.sh; prints each datagram (IP header onwards) in hex.
# Capture real keepalived adverts: keepalived in ns vrrpcap-a (192.0.2.1), tcpdump in ns vrrpcap-b (192.0.2.2).
set -u
D=$(mktemp -d)
cleanup() {
  [ -f $D/ka.pid ] && kill $(cat $D/ka.pid) 2>/dev/null
  sleep 0.5
  [ -f $D/td.pid ] && kill $(cat $D/td.pid) 2>/dev/null
  ip netns del vrrpcap-a 2>/dev/null; ip netns del vrrpcap-b 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT
run_case() { # name conf-instance-body global-extra
  local name=$1 body=$2 glob=$3
  cat > $D/$name.conf <<CONF
global_defs {
   router_id lbcap
   vrrp_skip_check_adv_addr
   vrrp_garp_interval 0
   vrrp_gna_interval 0
   $glob
}
vrrp_instance LB_VIP {
  interface veth-a
  state MASTER
  priority 101
  virtual_router_id 11
  advert_int 1
$body
  virtual_ipaddress {
    192.0.2.250
    192.0.2.20
    192.0.2.30
  }
}
CONF
  rm -f $D/ka.pid $D/td.pid
  ip netns exec vrrpcap-b tcpdump -i veth-b -n -w $D/$name.pcap 'ip proto 112 or ip proto 51' >/dev/null 2>&1 &
  echo $! > $D/td.pid
  sleep 1
  ip netns exec vrrpcap-a keepalived -n -l -D -P -f $D/$name.conf -p $D/ka-main.pid -r $D/ka-vrrp.pid > $D/$name.log 2>&1 &
  echo $! > $D/ka.pid
  sleep 6.5
  kill -TERM $(cat $D/ka.pid); wait $(cat $D/ka.pid) 2>/dev/null; rm -f $D/ka.pid
  sleep 1
  kill $(cat $D/td.pid); wait $(cat $D/td.pid) 2>/dev/null; rm -f $D/td.pid
}
ip netns add vrrpcap-a && ip netns add vrrpcap-b
ip link add veth-a netns vrrpcap-a type veth peer name veth-b netns vrrpcap-b
ip -n vrrpcap-a addr add 192.0.2.1/24 dev veth-a; ip -n vrrpcap-a link set veth-a up; ip -n vrrpcap-a link set lo up
ip -n vrrpcap-b addr add 192.0.2.2/24 dev veth-b; ip -n vrrpcap-b link set veth-b up; ip -n vrrpcap-b link set lo up
UNI="  unicast_src_ip 192.0.2.1
  unicast_peer {
    192.0.2.2
  }"
run_case v2-ah-unicast "  authentication {
    auth_type AH
    auth_pass Pass1234
  }
$UNI" ""
run_case v2-pass-unicast "  authentication {
    auth_type PASS
    auth_pass Pass1234
  }
$UNI" ""
run_case v2-ah-multicast "  authentication {
    auth_type AH
    auth_pass Pass1234
  }" ""
run_case v3-multicast "" "vrrp_version 3"
run_case v3-unicast "$UNI" "vrrp_version 3"
python3 - "$D" <<'PY'
import glob, struct, sys
for f in sorted(glob.glob(sys.argv[1] + '/*.pcap')):
    b = open(f, 'rb').read(); off = 24; print('==', f)
    while off < len(b):
        _, _, incl, _ = struct.unpack('<IIII', b[off:off + 16]); off += 16
        print(b[off + 14:off + incl].hex()); off += incl
PY
