#!/bin/bash
# Interop check, lb -> keepalived: a real keepalived (Debian 2.2.x) must accept adverts
# built by lb's codec in every mode lb supports. Run as root from the workspace root:
#   cargo build -p lb-userspace --example vrrp_emit && bash lb-userspace/src/vrrp/testdata/interop-keepalived.sh
# keepalived runs in netns vrrpio-a (192.0.2.1, priority 101); lb's adverts are sent from a
# raw socket in netns vrrpio-b (192.0.2.2). Per mode: keepalived becomes master, our priority
# 150 adverts must make it backup, our priority 0 advert must make it master again, and its
# log must show no protocol error. A last case sends AH with a wrong password: keepalived must
# reject it and stay master (so the check can fail). Exit status 0 only if all hold.
set -u
EMIT=${EMIT:-target/debug/examples/vrrp_emit}
D=$(mktemp -d)
FAILED=0
cleanup() {
  [ -f "$D/ka.pid" ] && kill "$(cat "$D/ka.pid")" 2>/dev/null; sleep 0.3
  ip netns del vrrpio-a 2>/dev/null; ip netns del vrrpio-b 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT
send() { # kind priority seq dst
  local hex; hex=$("$EMIT" "$1" "$2" "$3" "$4") || exit 1
  ip netns exec vrrpio-b python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], 0))' "$hex" "$4"
}
run_case() { # name kind dst instance-lines global-lines expect(accept|reject)
  local name=$1 kind=$2 dst=$3 body=$4 glob=$5 expect=$6
  cat > "$D/$name.conf" <<CONF
global_defs {
   router_id lbio
   vrrp_skip_check_adv_addr
   $glob
}
vrrp_instance LB_VIP {
  interface veth-a
  state BACKUP
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
  ip netns exec vrrpio-a keepalived -n -l -D -P -f "$D/$name.conf" -p "$D/ka-main.pid" \
    -r "$D/ka-vrrp.pid" > "$D/$name.log" 2>&1 &
  echo $! > "$D/ka.pid"
  sleep 5
  for i in 0 1 2 3; do send "$kind" 150 $((1000 + i)) "$dst"; sleep 1; done
  send "$kind" 0 1004 "$dst"
  sleep 2
  kill -TERM "$(cat "$D/ka.pid")"; wait "$(cat "$D/ka.pid")" 2>/dev/null; rm -f "$D/ka.pid"
  local log=$D/$name.log states errors
  states=$(grep -oE "Entering (MASTER|BACKUP) STATE|higher priority 150|priority 0 advertisement" "$log" | tr '\n' ',')
  errors=$(grep -ciE "invalid|mismatch|checksum|too short|too long|sequence number|wrong|unexpected" "$log")
  local want="Entering BACKUP STATE,Entering MASTER STATE,higher priority 150,Entering BACKUP STATE,priority 0 advertisement,Entering MASTER STATE,"
  if [ "$expect" = reject ]; then want="Entering BACKUP STATE,Entering MASTER STATE,"; fi
  local errors_ok=no
  if [ "$expect" = reject ]; then [ "$errors" -gt 0 ] && errors_ok=yes; else [ "$errors" -eq 0 ] && errors_ok=yes; fi
  if [ "$states" = "$want" ] && [ $errors_ok = yes ]; then
    echo "ok   $name ($expect)"
  else
    echo "FAIL $name ($expect): states [$states] errors $errors"; sed 's/^/    /' "$log"; FAILED=1
  fi
}
ip netns add vrrpio-a && ip netns add vrrpio-b || exit 1
ip link add veth-a netns vrrpio-a type veth peer name veth-b netns vrrpio-b
ip -n vrrpio-a addr add 192.0.2.1/24 dev veth-a; ip -n vrrpio-a link set veth-a up
ip -n vrrpio-b addr add 192.0.2.2/24 dev veth-b; ip -n vrrpio-b link set veth-b up
ip -n vrrpio-b route add 224.0.0.0/4 dev veth-b
UNI="  unicast_src_ip 192.0.2.1
  unicast_peer {
    192.0.2.2
  }"
AH="  authentication {
    auth_type AH
    auth_pass Pass1234
  }"
PASS="  authentication {
    auth_type PASS
    auth_pass Pass1234
  }"
run_case v2-ah-unicast ah 192.0.2.1 "$AH
$UNI" "" accept
run_case v2-ah-multicast ah 224.0.0.18 "$AH" "" accept
run_case v2-pass-unicast pass 192.0.2.1 "$PASS
$UNI" "" accept
run_case v3-multicast v3 224.0.0.18 "" "vrrp_version 3" accept
run_case v3-unicast v3 192.0.2.1 "$UNI" "vrrp_version 3" accept
PW=Pass1235 run_case v2-ah-wrong-password ah 192.0.2.1 "$AH
$UNI" "" reject
exit $FAILED
