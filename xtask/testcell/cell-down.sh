#!/bin/bash
# cell-down.sh: stop everything cell-up.sh started and remove its state.
# Run by `cargo xtask cell down` (which then removes the env file).
# Kills only PIDs recorded under $CELLDIR/pids and $CELLDIR/var-lib-openafs/local
# (after checking the command name), never by pattern.  Idempotent.
# Leaves the afscptool binary ($THIRD_PARTY, shared by cells) alone.
set -uo pipefail
T0=$(date +%s.%N)
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/lab-env.sh"

# kill_pidfile FILE EXPECTED-COMM [TIMEOUT]: SIGTERM, wait, then SIGKILL
kill_pidfile() {
  local f=$1 comm=$2 t=${3:-30} pid i
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  case $pid in ''|*[!0-9]*) return 0 ;; esac
  if [ -d /proc/"$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$comm" ]; then
    kill -TERM "$pid"
    for ((i = 0; i < t * 10; i++)); do [ -d /proc/"$pid" ] || break; sleep 0.1; done
    if [ -d /proc/"$pid" ]; then log "$comm ($pid) ignored SIGTERM, SIGKILL"; kill -KILL "$pid"; fi
    log "stopped $comm ($pid)"
  fi
}

# bosserver shuts its children down on SIGTERM ("Shutdown of BOS server and
# processes in response to signal 15"); the dafs fileserver saves its state.
# krb5kdc takes ~2 s to exit on SIGTERM: stop it in parallel.
kill_pidfile "$CELLDIR/pids/krb5kdc.pid" krb5kdc 10 &
kill_pidfile "$CELLDIR/pids/bosserver.pid" bosserver 60 &
kill_pidfile "$FS2DIR/pids/bosserver.pid" bosserver 60 &
wait
# children that bosserver should have stopped (pid files from -pidfiles)
for p in ptserver:ptserver vlserver:vlserver dafs.file:dafileserver \
         dafs.vol:davolserver dafs.salsrv:salvageserver; do
  kill_pidfile "$AFS_VARLIB/local/${p%%:*}.pid" "${p##*:}" 10
  kill_pidfile "$FS2DIR/var-lib-openafs/local/${p%%:*}.pid" "${p##*:}" 10
done
wait

for ns in "$CLIENT_NETNS" "$SERVER_NETNS"; do
  if [ -e /run/netns/"$ns" ]; then
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "$left" ]; then
      log "WARNING: processes still in $ns (not killed):"
      for pid in $left; do log "  $pid $(tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null)"; done
    fi
    ip netns del "$ns" && log "deleted netns $ns (veth pair goes with it)"
  fi
done
# the chroot mounts live in private mount namespaces and vanish with their
# processes; make sure nothing is mounted on $ROOTMNT in this namespace
mountpoint -q "$ROOTMNT" 2>/dev/null && umount -l "$ROOTMNT"
mountpoint -q "$FS2DIR/root" 2>/dev/null && umount -l "$FS2DIR/root"
if [ ! -e "$CELLDIR" ]; then
  log "CELL DOWN ($CELLDIR did not exist)"
elif [ -e "$CELLDIR/.afs-testcell" ]; then
  rm -rf "$CELLDIR"
  log "CELL DOWN ($CELLDIR removed)"
else
  log "CELL DOWN, but $CELLDIR has no .afs-testcell marker (not made by cell-up.sh?): not removed"
  exit 1
fi
