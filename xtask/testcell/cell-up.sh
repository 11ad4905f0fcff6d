#!/bin/bash
# cell-up.sh: stand up a real OpenAFS 1.8 cell ($CELL, realm $REALM) on this
# machine for automated client tests.  Debian 12 packages, no kernel module.
# Run by `cargo xtask cell up` (which installs packages, builds afscptool,
# tears down stale state, and writes the env file afterwards); settings come
# from the environment, see lab-env.sh.
#
#   netns $SERVER_NETNS (lo + $SERVER_IF $SERVER_IP/24): krb5kdc, bosserver
#                   -> ptserver, vlserver, dafs (dafileserver/davolserver/salvageserver)
#                 + $SERVER2_IP/24 on the same interface: a second bosserver
#                   -> dafs, the second fileserver (root under $FS2DIR); every
#                   bosserver, fileserver and volserver binds its own address
#                   only (-rxbind), so the two share the namespace
#   netns $CLIENT_NETNS (lo + $CLIENT_IF $CLIENT_IP/24): where clients run
#   Neither namespace has a default route: nothing can leave the veth pair.
#
# Result:
#   volumes root.afs, root.cell (each with an RO clone on the same
#   server/partition, released at the very end), vol.test (RW only);
#   users $ADMIN (system:administrators) and $USER1 (ccaches kinit'ed);
#   root.afs:  $CELL -> #root.cell.   .$CELL -> %root.cell.
#   root.cell: hello.txt, random.bin (200000 B), hello-link -> hello.txt,
#              shared/ (system:anyuser rlidwk) with afsio.txt ("seed",
#              created anonymously), vol -> #vol.test., vol-rw -> %vol.test.
#   vol.test:  inside.txt
#   vol.rep (RW on $SERVER_IP, RO sites on both servers): rep.txt, big.bin
#   vol.two (RW on $SERVER2_IP, RO sites on both servers): two.txt
#   root.cell also has an RO site on $SERVER2_IP; mount points rep, two
# After the release, /afs/$CELL/... is the RO clone; writers must use the RW
# path /afs/.$CELL/... (afscptool and afsio resolve /afs/.$CELL as RW).
set -euo pipefail
T0=$(date +%s.%N)
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/lab-env.sh"

# ---------------------------------------------------------------- preflight
[ "$(id -u)" = 0 ] || die "must run as root"
for b in /usr/sbin/bosserver /usr/lib/openafs/dafileserver /usr/lib/openafs/vlserver \
         /usr/sbin/asetkey /usr/sbin/krb5kdc /usr/sbin/kdb5_util nsenter unshare ip bc; do
  command -v "$b" >/dev/null || die "missing $b (packages not installed? see xtask/packages.txt)"
done
for d in /etc/openafs /var/lib/openafs /var/log/openafs; do
  [ -d "$d" ] || die "missing mount point $d (openafs packages not installed?)"
done
[ -x "$THIRD_PARTY" ] || die "afscptool not built: $THIRD_PARTY"
[ -e "$CELLDIR" ] && die "$CELLDIR exists: run 'cargo xtask cell down' first"
for ns in "$SERVER_NETNS" "$CLIENT_NETNS"; do
  [ -e /run/netns/"$ns" ] && die "netns $ns exists: run 'cargo xtask cell down' first"
done
[ "$SERVER_NETNS" != "$CLIENT_NETNS" ] || die "SERVER_NETNS and CLIENT_NETNS must differ"

# ---------------------------------------------------------------- layout
mkdir -p "$CELLDIR"
touch "$CELLDIR/.afs-testcell"                    # cell-down.sh only rm -rf's a dir with this marker
mkdir -p "$CELLDIR"/{krb5,keytabs,pids,logs/openafs,root} \
         "$AFS_ETC/server" "$AFS_VARLIB"/{db,local} "$VICEPA" "$AFS_CONF_DIR"
chmod 700 "$AFS_VARLIB/db" "$AFS_VARLIB/local"   # bosserver: "unhappy with ... should have at least rights 700"
touch "$VICEPA/AlwaysAttach"                      # plain dir on the root fs is fine with this
printf '127.0.0.1\tlocalhost\n%s\tafs1.%s %s\n%s\tafs2.%s\n' \
  "$SERVER_IP" "$CELL" "$(hostname)" "$SERVER2_IP" "$CELL" > "$HOSTS"
# the second fileserver's own root (labexec with CELLDIR=$FS2DIR)
mkdir -p "$FS2DIR"/{root,pids,logs/openafs,etc-openafs/server,var-lib-openafs/{db,local},vicepa}
chmod 700 "$FS2DIR/var-lib-openafs/db" "$FS2DIR/var-lib-openafs/local"
touch "$FS2DIR/vicepa/AlwaysAttach"
cp "$HOSTS" "$FS2DIR/hosts"
log "layout under $CELLDIR"

# ---------------------------------------------------------------- network
ip netns add "$SERVER_NETNS"
ip netns add "$CLIENT_NETNS"
ip link add "$SERVER_IF" netns "$SERVER_NETNS" type veth peer name "$CLIENT_IF" netns "$CLIENT_NETNS"
ip -n "$SERVER_NETNS" addr add "$SERVER_IP/$PREFIX" dev "$SERVER_IF"
ip -n "$CLIENT_NETNS" addr add "$CLIENT_IP/$PREFIX" dev "$CLIENT_IF"
ip -n "$SERVER_NETNS" addr add "$SERVER2_IP/$PREFIX" dev "$SERVER_IF"
for ns in "$SERVER_NETNS" "$CLIENT_NETNS"; do ip -n "$ns" link set lo up; done
ip -n "$SERVER_NETNS" link set "$SERVER_IF" up
ip -n "$CLIENT_NETNS" link set "$CLIENT_IF" up
log "netns $SERVER_NETNS ($SERVER_IP) <-veth-> $CLIENT_NETNS ($CLIENT_IP)"

# ---------------------------------------------------------------- Kerberos
cat > "$KRB/krb5.conf" <<EOF
[libdefaults]
    default_realm = $REALM
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    forwardable = true
[realms]
    $REALM = {
        kdc = $SERVER_IP:88
        admin_server = $SERVER_IP:749
    }
[domain_realm]
    .$CELL = $REALM
    $CELL = $REALM
EOF
cat > "$KRB/kdc.conf" <<EOF
[kdcdefaults]
    kdc_listen = $SERVER_IP:88, 127.0.0.1:88
    kdc_tcp_listen = $SERVER_IP:88, 127.0.0.1:88
[realms]
    $REALM = {
        database_name = $KRB/principal
        key_stash_file = $KRB/stash
        acl_file = $KRB/kadm5.acl
        admin_keytab = FILE:$KRB/kadm5.keytab
        master_key_type = $ENCTYPE
        supported_enctypes = $ENCTYPE:normal aes128-cts-hmac-sha1-96:normal
        max_life = 25h
        max_renewable_life = 7d
    }
[logging]
    kdc = FILE:$CELLDIR/logs/krb5kdc.log
EOF
echo "*/admin@$REALM *" > "$KRB/kadm5.acl"
kdb5_util create -s -r "$REALM" -P "master-$RANDOM$RANDOM" >/dev/null
# kadmin.local: quiet unless it fails ("No policy specified ..." is noise)
kadm() { local out; out=$(kadmin.local -q "$1" 2>&1) || { printf '%s\n' "$out" >&2; die "kadmin.local -q '$1' failed"; }; }
kadm "addprinc -pw $ADMIN_PW $ADMIN"
kadm "addprinc -pw $USER1_PW $USER1"
kadm "addprinc -pw $USER2_PW $USER2"
kadm "addprinc -randkey -e $ENCTYPE:normal afs/$CELL@$REALM"
kadm "ktadd -norandkey -k $CELLDIR/keytabs/afs.keytab afs/$CELL@$REALM"
KVNO=$(klist -k "$CELLDIR/keytabs/afs.keytab" | awk -v p="afs/$CELL@$REALM" '$2==p {print $1; exit}')
[ -n "$KVNO" ] || die "no afs/$CELL key in keytab"
log "KDC database: $ADMIN, $USER1, $USER2, afs/$CELL@$REALM (kvno $KVNO, $ENCTYPE)"
nsenter --net=/run/netns/"$SERVER_NETNS" /usr/sbin/krb5kdc -n -P "$CELLDIR/pids/krb5kdc.pid" \
  > "$CELLDIR/logs/krb5kdc.stdout" 2>&1 < /dev/null &
echo $! > "$CELLDIR/pids/krb5kdc.pid"
wait_for 10 "krb5kdc on $SERVER_IP:88" ip netns exec "$SERVER_NETNS" sh -c "ss -lnu | grep -q '$SERVER_IP:88 '"

# ---------------------------------------------------------------- AFS config
printf '%s\n' "$CELL" > "$AFS_ETC/server/ThisCell"
printf '>%s\t#lab cell\n%s\t#afs1.%s\n' "$CELL" "$SERVER_IP" "$CELL" > "$AFS_ETC/server/CellServDB"
cp "$AFS_ETC/server/ThisCell" "$AFS_ETC/server/CellServDB" "$AFS_ETC/"       # client side of stock tools (labexec)
cp "$AFS_ETC/server/ThisCell" "$AFS_ETC/server/CellServDB" "$AFS_CONF_DIR/"  # client conf for afsd-rs --conf-dir
printf '%s\n' "$ADMIN" > "$AFS_ETC/server/UserList"
printf '%s\n' "$SERVER_IP" > "$AFS_VARLIB/local/NetInfo"   # NB: local/, not server/
srv /usr/sbin/asetkey add rxkad_krb5 "$KVNO" "$ENCTYPE_NUM" \
    "$CELLDIR/keytabs/afs.keytab" "afs/$CELL@$REALM" >/dev/null
log "KeyFileExt: rxkad_krb5 kvno $KVNO enctype $ENCTYPE_NUM"
# the second fileserver: the same cell, DB servers and keys; its own address
cp -p "$AFS_ETC"/server/{ThisCell,CellServDB,UserList,KeyFileExt} "$FS2DIR/etc-openafs/server/"
cp "$AFS_ETC/ThisCell" "$AFS_ETC/CellServDB" "$FS2DIR/etc-openafs/"
printf '%s\n' "$SERVER2_IP" > "$FS2DIR/var-lib-openafs/local/NetInfo"

# ---------------------------------------------------------------- servers
"$LABEXEC" "$SERVER_NETNS" /usr/sbin/bosserver -nofork -pidfiles -cores none -rxbind \
  > "$CELLDIR/logs/bosserver.stdout" 2>&1 < /dev/null &
echo $! > "$CELLDIR/pids/bosserver.pid"
wait_for 20 "bosserver" srv bos listhosts "$SERVER_IP" -localauth
srv bos setrestart "$SERVER_IP" -time never -general -localauth
srv bos setrestart "$SERVER_IP" -time never -newbinary -localauth
srv bos create "$SERVER_IP" ptserver simple /usr/lib/openafs/ptserver -localauth
srv bos create "$SERVER_IP" vlserver simple /usr/lib/openafs/vlserver -localauth
# Start the fileserver only once both DBs have quorum; otherwise it logs
# "Couldn't get CPS for AnyUser, will try again in 30 seconds" and
# "VL_RegisterAddrs rpc failed; will retry periodically" (=every 5 min).
# NB: udebug says "I am sync site" at once, but calls fail with UNOQUORUM
# (5376) until ubik recovery is done (~4 s): test with real RPCs.
wait_for 90 "ptserver quorum" srv pts examine system:administrators -localauth
wait_for 90 "vlserver quorum" srv vos listvldb -localauth
srv bos create "$SERVER_IP" dafs dafs \
  -cmd "/usr/lib/openafs/dafileserver -rxbind" "/usr/lib/openafs/davolserver -rxbind" \
       /usr/lib/openafs/salvageserver /usr/lib/openafs/dasalvager -localauth
fs_registered() { srv vos listaddrs -noresolve -localauth 2>/dev/null | grep -qx "$SERVER_IP"; }
for i in $(seq 1 60); do fs_registered && break; sleep 0.5; done
if ! fs_registered; then
  # VL_RegisterAddrs failed at startup; the fileserver would retry only every
  # 5 minutes.  SIGXCPU makes it retry now (and dump its tables to FileLog).
  log "fileserver not registered yet: sending SIGXCPU"
  kill -XCPU "$(cat "$AFS_VARLIB/local/dafs.file.pid")"
fi
wait_for 60 "fileserver registered $SERVER_IP in VLDB" fs_registered
wait_for 90 "volserver answering" srv vos listpart "$SERVER_IP" -localauth

# ---------------------------------------------------------------- second fileserver
CELLDIR=$FS2DIR "$LABEXEC" "$SERVER_NETNS" /usr/sbin/bosserver -nofork -pidfiles -cores none -rxbind \
  > "$FS2DIR/logs/bosserver.stdout" 2>&1 < /dev/null &
echo $! > "$FS2DIR/pids/bosserver.pid"
wait_for 20 "second bosserver" srv bos listhosts "$SERVER2_IP" -localauth
srv bos setrestart "$SERVER2_IP" -time never -general -localauth
srv bos setrestart "$SERVER2_IP" -time never -newbinary -localauth
srv bos create "$SERVER2_IP" dafs dafs \
  -cmd "/usr/lib/openafs/dafileserver -rxbind" "/usr/lib/openafs/davolserver -rxbind" \
       /usr/lib/openafs/salvageserver /usr/lib/openafs/dasalvager -localauth
fs2_registered() { srv vos listaddrs -noresolve -localauth 2>/dev/null | grep -qx "$SERVER2_IP"; }
for i in $(seq 1 60); do fs2_registered && break; sleep 0.5; done
if ! fs2_registered; then
  log "second fileserver not registered yet: sending SIGXCPU"
  kill -XCPU "$(cat "$FS2DIR/var-lib-openafs/local/dafs.file.pid")"
fi
wait_for 60 "fileserver registered $SERVER2_IP in VLDB" fs2_registered
wait_for 90 "second volserver answering" srv vos listpart "$SERVER2_IP" -localauth
addrs=$(srv vos listaddrs -noresolve -localauth | sort | tr '\n' ' ')
want=$(printf '%s\n%s\n' "$SERVER_IP" "$SERVER2_IP" | sort | tr '\n' ' ')
[ "$addrs" = "$want" ] || die "VLDB server addresses are not exactly $want: $addrs"

# ---------------------------------------------------------------- pts + vldb
srv pts createuser -name "$ADMIN" -localauth >/dev/null
srv pts adduser "$ADMIN" system:administrators -localauth
srv pts createuser -name "$USER1" -localauth >/dev/null
srv pts createuser -name "$USER2" -localauth >/dev/null
log "pts: $ADMIN (system:administrators), $USER1, $USER2"
for v in root.afs root.cell vol.test; do      # default quota would be 5000 KB
  srv vos create "$SERVER_IP" a "$v" -maxquota 0 -localauth >/dev/null
done
# vol.small: a 1024 KB quota, for EDQUOT tests
srv vos create "$SERVER_IP" a vol.small -maxquota 1024 -localauth >/dev/null
# replicated volumes: vol.rep on the first server, vol.two on the second
srv vos create "$SERVER_IP" a vol.rep -maxquota 0 -localauth >/dev/null
srv vos create "$SERVER2_IP" a vol.two -maxquota 0 -localauth >/dev/null
log "volumes root.afs, root.cell, vol.test, vol.small, vol.rep, vol.two"

# ---------------------------------------------------------------- content
echo "$ADMIN_PW" | KRB5CCNAME=FILE:$ADMIN_CCACHE nsenter --net=/run/netns/"$CLIENT_NETNS" kinit "$ADMIN" >/dev/null
echo "$USER1_PW" | KRB5CCNAME=FILE:$USER1_CCACHE nsenter --net=/run/netns/"$CLIENT_NETNS" kinit "$USER1" >/dev/null
log "kinit: $ADMIN -> $ADMIN_CCACHE, $USER1 -> $USER1_CCACHE"
T=(cli "$THIRD_PARTY" -k)     # authenticated as $ADMIN (rxkad-k5 from $KRB5CCNAME)
RW=/afs/.$CELL                # RW path of root.cell: all writers use it
"${T[@]}" setacl @root.afs  system:administrators all system:anyuser rl
"${T[@]}" mkmount @root.afs/"$CELL" root.cell          # "#root.cell."
"${T[@]}" mkmount @root.afs/."$CELL" root.cell -rw     # "%root.cell."
"${T[@]}" setacl "$RW"/ system:administrators all system:anyuser rl
"${T[@]}" mkdir "$RW"/shared
"${T[@]}" setacl "$RW"/shared system:administrators all system:anyuser write
echo "hello from the lab cell" | "${T[@]}" put "$RW"/hello.txt
head -c 200000 /dev/urandom > "$CELLDIR/random.bin"
"${T[@]}" put "$RW"/random.bin < "$CELLDIR/random.bin"
"${T[@]}" symlink "$RW"/hello-link hello.txt
# shared/afsio.txt: created ANONYMOUSLY (afscptool without -k), because stock
# "afsio write" of a new file segfaults in 1.8.x; afsio may then read/append it.
echo "seed" | cli "$THIRD_PARTY" put "$RW"/shared/afsio.txt
# vol.test: "#" and "%" mount points in root.cell
"${T[@]}" setacl @vol.test system:administrators all system:anyuser rl
"${T[@]}" mkmount "$RW"/vol vol.test                   # "#vol.test."
"${T[@]}" mkmount "$RW"/vol-rw vol.test -rw            # "%vol.test."
echo "hello from vol.test" | "${T[@]}" put "$RW"/vol/inside.txt
# vol.small (quota 1024 KB) at %small, writable by anyone
"${T[@]}" mkmount "$RW"/small vol.small -rw
"${T[@]}" setacl @vol.small system:administrators all system:anyuser write
# vol.rep and vol.two, each replicated on both servers (released below)
"${T[@]}" setacl @vol.rep system:administrators all system:anyuser rl
"${T[@]}" mkmount "$RW"/rep vol.rep                    # "#vol.rep."
"${T[@]}" mkmount "$RW"/rep-rw vol.rep -rw             # "%vol.rep."
echo "hello from vol.rep" | "${T[@]}" put "$RW"/rep-rw/rep.txt
head -c $((24 << 20)) /dev/urandom > "$CELLDIR/big.bin"
"${T[@]}" put "$RW"/rep-rw/big.bin < "$CELLDIR/big.bin"
"${T[@]}" setacl @vol.two system:administrators all system:anyuser write
"${T[@]}" mkmount "$RW"/two vol.two                    # "#vol.two."
"${T[@]}" mkmount "$RW"/two-rw vol.two -rw             # "%vol.two."
echo "hello from vol.two" | "${T[@]}" put "$RW"/two-rw/two.txt
# $USER1's private directory: readable by $USER1 only (no system:anyuser).
"${T[@]}" mkdir "$RW"/private
echo "alice's secret" | "${T[@]}" put "$RW"/private/secret.txt
"${T[@]}" setacl "$RW"/private system:administrators all "$USER1" rl
[ "$(cli afsio read -file "$RW"/shared/afsio.txt)" = seed ] || die "afsio read of shared/afsio.txt failed"
"${T[@]}" cat "$RW"/random.bin | cmp - "$CELLDIR/random.bin" || die "random.bin round trip failed"
[ "$(cli "$THIRD_PARTY" cat "$RW"/vol-rw/inside.txt)" = "hello from vol.test" ] || die "vol-rw/inside.txt read back failed"
log "content: hello.txt random.bin(200000 B) hello-link shared/afsio.txt vol/ vol-rw/ -> vol.test"

# ---------------------------------------------------------------- RO clones
# Last step, after all content: RO sites for root.cell and root.afs on the
# same server/partition, then release.  From here on /afs/$CELL/... (and the
# "#root.cell." mount point) is the RO clone; /afs/.$CELL/... stays RW.
srv vos addsite "$SERVER_IP" a root.cell -localauth >/dev/null
srv vos addsite "$SERVER2_IP" a root.cell -localauth >/dev/null
srv vos addsite "$SERVER_IP" a root.afs -localauth >/dev/null
for v in vol.rep vol.two; do
  srv vos addsite "$SERVER_IP" a $v -localauth >/dev/null
  srv vos addsite "$SERVER2_IP" a $v -localauth >/dev/null
done
# in parallel: a release to the other server is a whole dump
pids=()
for v in root.cell root.afs vol.rep vol.two; do srv vos release $v -localauth >/dev/null & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || die "vos release failed"; done
log "released root.cell (RO on both servers), root.afs, vol.rep and vol.two (RO on both)"
ro_vol=$(cli "$THIRD_PARTY" stat /afs/"$CELL"/hello.txt | awk '{split($2, f, "."); print f[1]}')
rw_vol=$(cli "$THIRD_PARTY" stat "$RW"/hello.txt | awk '{split($2, f, "."); print f[1]}')
[ -n "$ro_vol" ] && [ "$ro_vol" != "$rw_vol" ] || die "/afs/$CELL is not the RO clone (volume $ro_vol, RW $rw_vol)"
[ "$(cli afsio read -file /afs/"$CELL"/hello.txt)" = "hello from the lab cell" ] || die "afsio read of /afs/$CELL/hello.txt (RO) failed"
log "/afs/$CELL -> RO volume $ro_vol, /afs/.$CELL -> RW volume $rw_vol"

log "CELL UP"
echo "--- vos listaddrs";  srv vos listaddrs -noresolve -localauth
echo "--- vos listvldb";   srv vos listvldb -noresolve -localauth | grep -E '^[a-z]|server'
