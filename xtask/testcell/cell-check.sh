#!/bin/bash
# cell-check.sh: thorough check of a cell brought up by cell-up.sh
# (`cargo xtask cell check`; ~13 s, 12 s of it the link-cut timeout).
# Writes only in /afs/.$CELL/shared (RW) and cuts the link for a moment.
# The quick read-only subset is `cargo xtask cell status`.  Re-runnable.
set -uo pipefail
T0=$(date +%s.%N)
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/lab-env.sh"
fail=0
check() { local what=$1; shift; if "$@"; then log "PASS $what"; else log "FAIL $what"; fail=1; fi; }
dv_of() { cli "$THIRD_PARTY" stat "$1" | sed 's/.* dv \([0-9]*\) .*/\1/'; }
vol_of() { cli "$THIRD_PARTY" stat "$1" | awk '{split($2, f, "."); print f[1]}'; }
RW=/afs/.$CELL

addrs=$(srv vos listaddrs -noresolve -localauth | sort | tr '\n' ' ')
want=$(printf '%s\n%s\n' "$SERVER_IP" "$SERVER2_IP" | sort | tr '\n' ' ')
check "VLDB holds exactly $SERVER_IP and $SERVER2_IP for the fileservers (got: $addrs)" [ "$addrs" = "$want" ]
vldb=$(srv vos listvldb -noresolve -localauth)
check "vos listvldb: root.afs, root.cell, vol.test, all on $SERVER_IP or $SERVER2_IP" \
  sh -c "echo '$vldb' | grep -q '^root.afs' && echo '$vldb' | grep -q '^root.cell' && echo '$vldb' | grep -q '^vol.test' && ! echo '$vldb' | grep 'server ' | grep -v '$SERVER_IP' | grep -vq '$SERVER2_IP'"
check "root.cell (two), root.afs (one), vol.rep and vol.two (two each) have released RO sites" \
  sh -c "[ \$(echo '$vldb' | grep -c 'RO Site') -eq 7 ] && ! echo '$vldb' | grep -qi 'not released'"
# an address outside the veth: the host's default gateway if it has one
offnet=$(ip route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "via") {print $(i+1); exit}}')
offnet=${offnet:-203.0.113.1}
check "no route from $CLIENT_NETNS to the host's network ($offnet)" \
  sh -c "! ip netns exec '$CLIENT_NETNS' ip route get '$offnet' >/dev/null 2>&1"
check "no default route in $SERVER_NETNS" sh -c "! ip -n '$SERVER_NETNS' route | grep -q default"
check "no default route in $CLIENT_NETNS" sh -c "! ip -n '$CLIENT_NETNS' route | grep -q default"
check "rxdebug fileserver from $CLIENT_NETNS" sh -c "'$LABEXEC' '$CLIENT_NETNS' rxdebug $SERVER_IP 7000 -version 2>&1 | grep -q 'OpenAFS 1.8'"
check "anonymous afsio read /afs/$CELL/hello.txt (RO)" sh -c "[ \"\$('$LABEXEC' '$CLIENT_NETNS' afsio read -file /afs/$CELL/hello.txt)\" = 'hello from the lab cell' ]"
ro=$(vol_of /afs/"$CELL"/hello.txt); rw=$(vol_of "$RW"/hello.txt)
check "/afs/$CELL is the RO clone ($ro), /afs/.$CELL the RW volume ($rw)" sh -c "[ -n '$ro' ] && [ '$ro' != '$rw' ]"
check "vol (#) and vol-rw (%) reach vol.test" \
  sh -c "[ \"\$('$LABEXEC' '$CLIENT_NETNS' '$THIRD_PARTY' cat $RW/vol/inside.txt)\" = 'hello from vol.test' ] && [ \"\$('$LABEXEC' '$CLIENT_NETNS' '$THIRD_PARTY' cat $RW/vol-rw/inside.txt)\" = 'hello from vol.test' ]"

# shared/afsio.txt was created anonymously by afscptool (no -k) in cell-up.sh;
# stock afsio (always anonymous, exit status always 0) may read/append it.
f=$RW/shared/afsio.txt
check "shared/afsio.txt owned by anonymous (32766)" \
  sh -c "'$LABEXEC' '$CLIENT_NETNS' '$THIRD_PARTY' stat $f | grep -q ' owner 32766 '"
before=$(cli afsio read -file "$f"; echo x); before=${before%x}
echo "appended by afsio" | cli afsio append -file "$f"
after=$(cli "$THIRD_PARTY" cat "$f"; echo x); after=${after%x}
check "stock afsio append to shared/afsio.txt (read back with afscptool)" \
  [ "$after" = "${before}appended by afsio"$'\n' ]

export KRB5CCNAME=FILE:$USER1_CCACHE
check "kvno afs/$CELL@$REALM as $USER1" nsenter --net=/run/netns/"$CLIENT_NETNS" kvno "afs/$CELL@$REALM"
check "$USER1 denied in root.cell root (ACL system:anyuser rl)" \
  sh -c "! echo x | '$LABEXEC' '$CLIENT_NETNS' '$THIRD_PARTY' -k put $RW/denied.txt 2>/dev/null"
echo "v1" | cli "$THIRD_PARTY" -k put "$RW"/shared/conflict.txt
dv1=$(dv_of "$RW"/shared/conflict.txt)
echo "third party" | cli afsio append -file "$RW"/shared/conflict.txt
dv2=$(dv_of "$RW"/shared/conflict.txt)
check "third-party afsio append bumps DataVersion ($dv1 -> $dv2)" [ "$dv2" -eq $((dv1 + 1)) ]
export KRB5CCNAME=FILE:$ADMIN_CCACHE

ip -n "$SERVER_NETNS" link set "$SERVER_IF" down
s=$(date +%s.%N)
cli "$THIRD_PARTY" stat /afs/"$CELL"/hello.txt >/dev/null 2>&1; rc=$?
log "link cut: afscptool stat rc=$rc after $(echo "$(date +%s.%N) - $s" | bc) s"
check "request fails while $SERVER_IF is down" [ "$rc" -ne 0 ]
ip -n "$SERVER_NETNS" link set "$SERVER_IF" up
check "request works again after link up" cli "$THIRD_PARTY" stat /afs/"$CELL"/hello.txt

[ $fail = 0 ] && log "ALL CHECKS PASSED" || log "SOME CHECKS FAILED"
exit $fail
