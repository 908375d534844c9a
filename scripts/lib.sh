# Shared by scripts/*.sh: make sure what keymux needs is installed, the same way everywhere.
#  - npm dependencies: `npm ci` when node_modules is missing or older than package-lock.json (npm ci also builds,
#    through the package's `prepare` script);
#  - Debian packages: installed with apt-get when a binary is missing and we run as root; otherwise a clear
#    message naming the package and the command to install it.

ensure_node_modules() {
  if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "keymux: installing npm dependencies (npm ci)"
    npm ci --no-audit --no-fund
  fi
}

_apt_updated=0
# ensure_binaries "binary:package" ...
ensure_binaries() {
  local missing=()
  local pair bin pkg
  for pair in "$@"; do
    bin="${pair%%:*}"
    pkg="${pair#*:}"
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
      case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "keymux: installing ${missing[*]} with apt-get"
    if [ "$_apt_updated" -eq 0 ]; then
      apt-get update -qq
      _apt_updated=1
    fi
    # A package none of the configured apt sources offers would make apt-get fail with a vague message: name it.
    local unavailable=()
    # (The policy is read whole before it is matched: `apt-cache policy | grep -q` under `set -o pipefail` fails
    # with SIGPIPE (141) whenever grep stops reading before apt-cache has written everything.)
    local policy
    for pkg in "${missing[@]}"; do
      policy="$(apt-cache policy "$pkg" 2>/dev/null || true)"
      case "$policy" in *"Candidate: ("*|"") unavailable+=("$pkg") ;; *"Candidate: "*) ;; *) unavailable+=("$pkg") ;; esac
    done
    if [ ${#unavailable[@]} -gt 0 ]; then
      echo "keymux: no apt source here offers ${unavailable[*]}." >&2
      case " ${unavailable[*]} " in *" kubectl "*)
        echo "keymux: kubectl is not in Debian's own archive (its kubernetes-client 1.20 is too old for the kustomizations" >&2
        echo "keymux: in deploy/); add the Kubernetes apt repository (see kubernetes.io, \"Install kubectl on Linux\")" >&2
        echo "keymux: and run this command again." >&2 ;;
      esac
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a redis-server service on port 6379 after installing it; keymux never uses it.
  else
    echo "keymux: missing ${missing[*]}." >&2
    echo "keymux: install with: sudo apt-get install -y ${missing[*]}   (then run this command again)" >&2
    exit 1
  fi
}

# /usr/sbin is not on every user's PATH, and nutcracker lives there.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
