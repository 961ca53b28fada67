#!/bin/sh
# Put Chaperone's system pieces in place on Linux. Chaperone itself must be
# installed already (pip/pipx), so that `chaperone` runs; see installer/README.md.
#
#   install.sh [options]
#     --chaperone PATH   the chaperone program (default: the one on PATH)
#     --home DIR         the system agent's home (default /var/lib/chaperone)
#     --system-agent     install and start the systemd unit chaperone-agent.service
#     --autostart        start the tray at every desktop login (/etc/xdg/autostart)
#     --enable-sshd      gate technicians' SSH logins behind consent: the
#                        AuthorizedKeysCommand wrapper and the sshd drop-in
#     --disable-sshd     remove the sshd drop-in again
#     --root DIR         install under DIR instead of / (packaging, tests); no
#                        service is started or reloaded
#     --no-reload        do not start, enable or reload any service
#
# Nothing touches sshd's configuration unless --enable-sshd or --disable-sshd
# is given. Every step says what it did.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=""
HOME_DIR=/var/lib/chaperone
CHAPERONE=""
SYSTEM_AGENT=0
AUTOSTART=0
ENABLE_SSHD=0
DISABLE_SSHD=0
RELOAD=1

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --chaperone) [ $# -ge 2 ] || die "--chaperone needs a path."; CHAPERONE=$2; shift 2 ;;
        --home) [ $# -ge 2 ] || die "--home needs a folder."; HOME_DIR=$2; shift 2 ;;
        --root) [ $# -ge 2 ] || die "--root needs a folder."; ROOT=${2%/}; RELOAD=0; shift 2 ;;
        --system-agent) SYSTEM_AGENT=1; shift ;;
        --autostart) AUTOSTART=1; shift ;;
        --enable-sshd) ENABLE_SSHD=1; shift ;;
        --disable-sshd) DISABLE_SSHD=1; shift ;;
        --no-reload) RELOAD=0; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1; see --help." ;;
    esac
done

[ "$ENABLE_SSHD" = 1 ] && [ "$DISABLE_SSHD" = 1 ] && die "choose --enable-sshd or --disable-sshd, not both."
if [ "$SYSTEM_AGENT$AUTOSTART$ENABLE_SSHD$DISABLE_SSHD" = 0000 ]; then
    die "nothing to do; pass --system-agent, --autostart, --enable-sshd or --disable-sshd (see --help)."
fi
case "$HOME_DIR" in
    /*) ;;
    *) die "--home must be an absolute path." ;;
esac
case "$HOME_DIR" in
    *[!A-Za-z0-9/._-]*) die "--home may only hold letters, digits and / . _ - (it goes into sshd's configuration)." ;;
esac

if [ -z "$CHAPERONE" ]; then
    CHAPERONE=$(command -v chaperone || true)
    [ -n "$CHAPERONE" ] || die "chaperone is not on PATH; install it first or pass --chaperone PATH."
fi
case "$CHAPERONE" in
    /*) ;;
    *) die "--chaperone must be an absolute path." ;;
esac
case "$CHAPERONE" in
    *[!A-Za-z0-9/._+-]*) die "the chaperone path may only hold letters, digits and / . _ + -." ;;
esac
if [ -z "$ROOT" ]; then
    [ "$(id -u)" = 0 ] || die "run as root (or with --root DIR to stage the files)."
    [ -x "$CHAPERONE" ] || die "$CHAPERONE is not an executable program."
fi

subst() {  # subst SRC DEST MODE: copy with @CHAPERONE@ and @HOME@ filled in
    mkdir -p "$(dirname "$2")"
    sed -e "s#@CHAPERONE@#$CHAPERONE#g" -e "s#@HOME@#$HOME_DIR#g" "$1" > "$2.tmp"
    chmod "$3" "$2.tmp"
    mv -f "$2.tmp" "$2"
}

# A folder is safe for sshd if it and every folder above it are owned by root
# and writable by no one else (sshd refuses the AuthorizedKeysCommand otherwise).
check_safe_path() {
    p=$1
    while :; do
        owner=$(stat -c %u "$p")
        mode=$(stat -c %a "$p")
        [ "$owner" = 0 ] || return 1
        case "$mode" in
            *[2367]? | *[2367]) return 1 ;;
        esac
        [ "$p" = / ] && return 0
        [ "$p" = "$ROOT" ] && return 0
        p=$(dirname "$p")
    done
}

reload_sshd() {
    if [ "$RELOAD" = 1 ]; then
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
            systemctl reload ssh && say "reloaded ssh.service."
        elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet sshd 2>/dev/null; then
            systemctl reload sshd && say "reloaded sshd.service."
        else
            say "reload sshd yourself (e.g. 'systemctl reload ssh') for the change to take effect."
        fi
    fi
}

if [ "$SYSTEM_AGENT" = 1 ]; then
    unit=$ROOT/etc/systemd/system/chaperone-agent.service
    subst "$HERE/chaperone-agent.service" "$unit" 0644
    mkdir -p "$ROOT$HOME_DIR"
    chmod 0700 "$ROOT$HOME_DIR"
    say "installed $unit (home $HOME_DIR)."
    if [ "$RELOAD" = 1 ]; then
        systemctl daemon-reload
        systemctl enable --now chaperone-agent.service
        say "enabled and started chaperone-agent.service."
    fi
fi

if [ "$AUTOSTART" = 1 ]; then
    entry=$ROOT/etc/xdg/autostart/chaperone-tray.desktop
    subst "$HERE/chaperone-tray.desktop" "$entry" 0644
    icon=$HERE/../../ui/assets/idle.svg
    if [ -f "$icon" ]; then
        mkdir -p "$ROOT/usr/share/icons/hicolor/scalable/apps"
        cp "$icon" "$ROOT/usr/share/icons/hicolor/scalable/apps/chaperone.svg"
    fi
    say "installed $entry: the tray starts at each desktop login."
fi

if [ "$ENABLE_SSHD" = 1 ]; then
    libexec=$ROOT/usr/local/libexec/chaperone
    mkdir -p "$libexec"
    chmod 0755 "$ROOT/usr/local/libexec" "$libexec"
    subst "$HERE/ssh-authorize" "$libexec/ssh-authorize" 0755
    if [ -z "$ROOT" ]; then
        chown root:root "$libexec" "$libexec/ssh-authorize"
        check_safe_path "$libexec/ssh-authorize" \
            || die "$libexec or a folder above it is not root-owned or is writable by others; sshd would refuse it."
    fi
    dropin=$ROOT/etc/ssh/sshd_config.d/chaperone.conf
    mkdir -p "$(dirname "$dropin")"
    sed -e "s#^AuthorizedKeysCommand /usr/local/libexec/chaperone/ssh-authorize --home [^ ]* #AuthorizedKeysCommand /usr/local/libexec/chaperone/ssh-authorize --home $HOME_DIR #" \
        "$HERE/sshd_config.d/chaperone.conf" > "$dropin.tmp"
    chmod 0644 "$dropin.tmp"
    mv -f "$dropin.tmp" "$dropin"
    say "installed $libexec/ssh-authorize and $dropin."
    if ! grep -Eqs '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' "$ROOT/etc/ssh/sshd_config"; then
        say "warning: $ROOT/etc/ssh/sshd_config does not include sshd_config.d/*.conf; add"
        say "  Include /etc/ssh/sshd_config.d/*.conf"
        say "at its top, or the drop-in has no effect."
    fi
    if grep -Eqs '^[[:space:]]*AuthorizedKeysCommand[[:space:]]' "$ROOT/etc/ssh/sshd_config"; then
        say "warning: $ROOT/etc/ssh/sshd_config has its own AuthorizedKeysCommand; sshd uses the first one it reads."
    fi
    if [ -z "$ROOT" ]; then
        if ! sshd_check=$(/usr/sbin/sshd -t 2>&1); then
            rm -f "$dropin"
            die "sshd rejects its configuration with the drop-in, so it was removed again: $sshd_check"
        fi
        reload_sshd
    fi
fi

if [ "$DISABLE_SSHD" = 1 ]; then
    dropin=$ROOT/etc/ssh/sshd_config.d/chaperone.conf
    if [ -e "$dropin" ]; then
        rm -f "$dropin"
        say "removed $dropin."
        if [ -z "$ROOT" ]; then
            reload_sshd
        fi
    else
        say "$dropin is not there; nothing to remove."
    fi
fi
