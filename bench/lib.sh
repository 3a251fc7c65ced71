# Shared by the bench scripts (sourced, not run).

# Installs the Debian packages named, with apt-get (as root, or through sudo).
need_packages() {
  [ $# -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

# Installs hyperfine if this machine lacks it.
need_hyperfine() {
  command -v hyperfine >/dev/null || need_packages hyperfine
}

# Waits (up to 5 s) for a Unix socket to appear.
wait_for_socket() {
  for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "no socket at $1" >&2
  return 1
}
