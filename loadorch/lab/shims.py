"""What a lab host's user_data finds on its PATH where this machine cannot do what EC2 would.

A lab host's user_data is really executed, as root, with bash, inside the host. Most of what the
injector bootstrap does works there as written (files under /etc, /opt/spike, `install`, `id`,
`date`); what cannot happen on this machine is done by one shim script installed under many
names in /var/lib/spike-lab/shims, a directory that is on the PATH of the user_data run only
(never of an SSH session). Every shim says what it emulated on stderr, which the bootstrap sends
to /var/log/spike-bootstrap.log, and in /var/log/spike-lab.log inside the host.

Emulated, exactly:
- `dnf`, `yum`, `apt-get`, `apt`: nothing is downloaded or installed. `install` of a Java package
  (java*, *jdk*, *jre*, *corretto*) succeeds if this machine's `java` runs, and says which one;
  `chrony` succeeds with a note that the host shares this machine's clock; any other package
  succeeds only if a program of that name exists here. `update`, `makecache`, `clean`: no-ops.
- `shutdown [-h|-P|-H] +N|now|HH:MM [message]`, `shutdown -c`, `poweroff`, `halt`,
  `systemd-run --on-active=Nm ... poweroff`: the request is written to /run/spike-lab/shutdown
  and the host's init honours it: at that time the host powers off and the lab applies the
  instance's shutdown behaviour in moto (terminate, or stop), exactly like the TTL on EC2.
  `shutdown -r` (reboot) is refused: lab hosts cannot reboot.
- `sysctl --system`, `sysctl -p [FILE]`, `sysctl -w KEY=VALUE`: keys that belong to the host's
  network namespace (net.ipv4.*, net.ipv6.*, net.core.somaxconn) are applied inside it; every
  other key (fs.file-max, net.core.rmem_max, kernel.*, vm.*) is machine-wide and skipped with a
  log line: the lab never changes this machine's kernel. Reading a key works.
- `systemctl`, `chronyc`, `timedatectl`: no-ops that log and succeed. There is no systemd in a
  lab host, and no time sync: the host shares this machine's clock, which is exactly in sync
  with spike's (so the clock check always passes in the lab).
"""

from __future__ import annotations

SHIM_DIR = "/var/lib/spike-lab/shims"
SHUTDOWN_REQUEST = "/run/spike-lab/shutdown"
EMULATION_LOG = "/var/log/spike-lab.log"
SHIM_NAMES: tuple[str, ...] = (
    "dnf",
    "yum",
    "apt-get",
    "apt",
    "shutdown",
    "poweroff",
    "halt",
    "systemd-run",
    "sysctl",
    "systemctl",
    "chronyc",
    "timedatectl",
)
SHIM_SCRIPT_NAME = "spike-lab-shim"

SHIM_SCRIPT = r"""#!/bin/bash
# spike lab: emulates on a lab host what this machine cannot do (see loadorch/lab/shims.py).
name=$(basename "$0")
say() {
  local line="spike-lab: $name: $*"
  echo "$line" >&2
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $line" >>__EMULATION_LOG__ 2>/dev/null || true
}

packages() {
  # the package manager's arguments without options and the subcommand
  local sub="" status=0 pkg
  for arg in "$@"; do
    case "$arg" in
      -*) continue ;;
    esac
    if [ -z "$sub" ]; then sub=$arg; continue; fi
    pkg=$arg
    case "$pkg" in
      *java*|*jdk*|*jre*|*corretto*)
        if java_path=$(command -v java) && version=$(java -version 2>&1 | head -n 1); then
          say "install $pkg: emulated, nothing installed: this machine's java is used ($java_path, $version)"
        else
          say "install $pkg: FAILED: there is no working java on this machine to stand in for it"
          status=1
        fi ;;
      chrony|chrony-*)
        say "install $pkg: emulated, nothing installed: the lab host shares this machine's clock (no time sync needed)" ;;
      *)
        if command -v "$pkg" >/dev/null 2>&1; then
          say "install $pkg: emulated, nothing installed: $(command -v "$pkg") from this machine is used"
        else
          say "install $pkg: FAILED: no package can be installed in the lab and this machine has no $pkg"
          status=1
        fi ;;
    esac
  done
  return $status
}

schedule_shutdown() {
  # $1: seconds from now; $2: message
  local at=$(( $(date +%s) + $1 ))
  mkdir -p "$(dirname __SHUTDOWN_REQUEST__)"
  printf '%s\n%s\n' "$at" "$2" >__SHUTDOWN_REQUEST__.tmp && mv __SHUTDOWN_REQUEST__.tmp __SHUTDOWN_REQUEST__
  say "power-off scheduled for $(date -u -d "@$at" +%Y-%m-%dT%H:%M:%SZ) ($1 s from now): emulated, the lab then applies the instance's shutdown behaviour (terminate or stop)"
  echo "Shutdown scheduled for $(date -d "@$at"), use 'shutdown -c' to cancel."
}

sysctl_key() {
  # $1 key, $2 value, $3 where it came from
  local key=$1 value=$2 from=$3
  case "$key" in
    net.ipv4.*|net.ipv6.*|net.core.somaxconn)
      if printf '%s\n' "$value" >"/proc/sys/${key//.//}" 2>/dev/null; then
        say "$key = $value: applied in this host's network namespace${from:+ (from $from)}"
      else
        say "$key = $value: could not be applied in this host's network namespace${from:+ (from $from)}"
        return 1
      fi ;;
    *)
      say "$key = $value: skipped, machine-wide: the lab does not change this machine's kernel${from:+ (from $from)}" ;;
  esac
}

sysctl_file() {
  local file=$1 line key value status=0
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    case "$line" in *=*) ;; *) continue ;; esac
    key=$(echo "${line%%=*}" | tr -d '[:space:]')
    key=${key#-}
    value=$(echo "${line#*=}" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    [ -n "$key" ] || continue
    sysctl_key "$key" "$value" "$file" || status=1
  done <"$file"
  return $status
}

case "$name" in
  dnf|yum|apt-get|apt)
    sub=""
    for arg in "$@"; do case "$arg" in -*) ;; *) sub=$arg; break ;; esac; done
    case "$sub" in
      install) packages "$@"; exit $? ;;
      *) say "$sub: emulated as a no-op (the lab has no package repositories)"; exit 0 ;;
    esac ;;
  shutdown)
    when="" message="" reboot=0
    for arg in "$@"; do
      case "$arg" in
        -c|--cancel) rm -f __SHUTDOWN_REQUEST__; say "scheduled power-off cancelled"; exit 0 ;;
        -r|--reboot) reboot=1 ;;
        -*) ;;
        *) if [ -z "$when" ]; then when=$arg; else message="${message:+$message }$arg"; fi ;;
      esac
    done
    if [ $reboot = 1 ]; then say "reboot: not emulated, lab hosts cannot reboot"; exit 1; fi
    case "${when:-+1}" in
      now) seconds=0 ;;
      +*) seconds=$(( ${when#+} * 60 )) ;;
      *:*) target=$(date -d "$when" +%s) || exit 1
           seconds=$(( target - $(date +%s) )); [ $seconds -lt 0 ] && seconds=$(( seconds + 86400 )) ;;
      *) say "cannot read the time $when"; exit 1 ;;
    esac
    schedule_shutdown "$seconds" "$message"; exit 0 ;;
  poweroff|halt)
    schedule_shutdown 0 "$name"; exit 0 ;;
  systemd-run)
    seconds="" command=""
    for arg in "$@"; do
      case "$arg" in
        --on-active=*m) seconds=${arg#--on-active=}; seconds=$(( ${seconds%m} * 60 )) ;;
        --on-active=*) seconds=${arg#--on-active=}; seconds=${seconds%s} ;;
        -*) ;;
        *) command="${command:+$command }$arg" ;;
      esac
    done
    case "$command" in
      */poweroff|poweroff|*/halt|halt)
        schedule_shutdown "${seconds:-0}" "systemd-run $command"; exit 0 ;;
    esac
    say "$*: not emulated (no systemd in the lab host)"; exit 1 ;;
  sysctl)
    status=0
    case "${1:-}" in
      --system)
        for file in /etc/sysctl.d/*.conf /etc/sysctl.conf; do sysctl_file "$file" || status=1; done ;;
      -p|--load)
        sysctl_file "${2:-/etc/sysctl.conf}" || status=1 ;;
      -w)
        shift
        for pair in "$@"; do sysctl_key "${pair%%=*}" "${pair#*=}" "" || status=1; done ;;
      *)
        for key in "$@"; do
          case "$key" in -*) continue ;; esac
          echo "$key = $(cat "/proc/sys/${key//.//}" 2>/dev/null)"
        done ;;
    esac
    exit $status ;;
  systemctl)
    say "$*: emulated as a no-op (no systemd in the lab host)"; exit 0 ;;
  chronyc|timedatectl)
    say "$*: emulated as a no-op: the lab host shares this machine's clock"; exit 0 ;;
esac
say "unknown shim name"
exit 1
"""


def shim_script() -> str:
    """The shim's text, with its paths filled in."""
    return SHIM_SCRIPT.replace("__EMULATION_LOG__", EMULATION_LOG).replace(
        "__SHUTDOWN_REQUEST__", SHUTDOWN_REQUEST
    )
