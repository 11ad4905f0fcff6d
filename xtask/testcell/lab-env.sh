# Shared settings + helpers for cell-up.sh / cell-check.sh / cell-down.sh.
# Source me (bash).  Normally run by `cargo xtask cell ...`, which exports
# the settings below.  The variable names are exactly those of the env file
# that `cargo xtask cell up` writes (target/testcell/env), so for manual use:
#     set -a; . target/testcell/env; set +a; xtask/testcell/cell-check.sh
#
# KIT     = the directory this file is in (not configurable).
# CELLDIR = all runtime state of one cell (config, KDC db, /vicepa, logs,
#           pid files); created by cell-up.sh, rm -rf'd by cell-down.sh.
# The only other things created are the two network namespaces
# (/run/netns/$SERVER_NETNS, /run/netns/$CLIENT_NETNS) and the veth pair
# between them.  Nothing is written to /etc, /var/lib/openafs, / (/vicepa)
# etc: the stock Debian binaries run through $KIT/labexec, which gives them a
# private mount namespace + chroot in which those paths are bind mounts of
# directories under $CELLDIR.

KIT=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
for _v in CELL REALM SERVER_NETNS CLIENT_NETNS SERVER_IF CLIENT_IF SERVER_IP CLIENT_IP \
          CELLDIR THIRD_PARTY ADMIN ADMIN_PW USER1 USER1_PW; do
  if [ -z "${!_v:-}" ]; then
    echo "lab-env.sh: $_v is not set. These scripts are driven by 'cargo xtask cell ...';" \
         "by hand: set -a; . target/testcell/env; set +a" >&2
    exit 2
  fi
done
unset _v
case $CELLDIR in /*) ;; *) echo "lab-env.sh: CELLDIR must be absolute: $CELLDIR" >&2; exit 2 ;; esac
PREFIX=24
ENCTYPE=aes256-cts-hmac-sha1-96
ENCTYPE_NUM=18                    # asetkey wants the number
ADMIN_CCACHE=${ADMIN_CCACHE:-$CELLDIR/ccache.$ADMIN}
USER1_CCACHE=${USER1_CCACHE:-$CELLDIR/ccache.$USER1}
USER2=${USER2:-bob}                 # a second plain user (a second token holder)
USER2_PW=${USER2_PW:-bobpw}
AFS_CONF_DIR=${AFS_CONF_DIR:-$CELLDIR/client-etc}   # client ThisCell + CellServDB (for afsd-rs --conf-dir)
LABEXEC=$KIT/labexec
# The second fileserver: its own address in the server netns, its own
# bosserver and labexec root under $FS2DIR (a CELLDIR of its own for labexec).
SERVER2_IP=${SERVER2_IP:-${SERVER_IP%.*}.$(( ${SERVER_IP##*.} + 2 ))}
FS2DIR=$CELLDIR/fs2

KRB=$CELLDIR/krb5
export KRB5_CONFIG=$KRB/krb5.conf
export KRB5_KDC_PROFILE=$KRB/kdc.conf
export KRB5CCNAME=FILE:$ADMIN_CCACHE
export CELLDIR THIRD_PARTY

# the same paths labexec derives from CELLDIR
AFS_ETC=$CELLDIR/etc-openafs          # -> /etc/openafs   (server/, BosConfig, ThisCell, CellServDB)
AFS_VARLIB=$CELLDIR/var-lib-openafs   # -> /var/lib/openafs (db/, local/ incl. NetInfo, pid files)
AFS_LOG=$CELLDIR/logs/openafs         # -> /var/log/openafs (BosLog FileLog VLLog PtLog VolserLog ...)
VICEPA=$CELLDIR/vicepa                # -> /vicepa
HOSTS=$CELLDIR/hosts                  # -> /etc/hosts (no DNS for the cell's names)
ROOTMNT=$CELLDIR/root                 # tmpfs mount point for the chroot

T0=${T0:-$(date +%s.%N)}
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }

# srv CMD... / cli CMD...: run a stock binary with the cell's view of the
# filesystem (/etc/openafs, /etc/hosts, ...), in the server / client netns.
srv() { "$LABEXEC" "$SERVER_NETNS" "$@"; }
srv2() { CELLDIR=$FS2DIR "$LABEXEC" "$SERVER_NETNS" "$@"; }
cli() { "$LABEXEC" "$CLIENT_NETNS" "$@"; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD (quietly) every 0.5 s.
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && die "timed out after ${secs}s waiting for: $what"
    sleep 0.5
  done
  log "ok: $what"
}
