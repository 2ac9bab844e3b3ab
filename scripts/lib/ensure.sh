# Shared by demo.sh and test.sh: install what a fresh machine lacks.
# Sourced, not run. Needs bash.

# ensure_tools CMD:PACKAGE ... — apt-get install the packages whose command is missing.
# CMD may be a command name, a path, or a path glob (e.g. /boot/vmlinuz-*-amd64 for a kernel package).
ensure_tools() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if [[ "$cmd" == *'*'* ]]; then
      compgen -G "$cmd" >/dev/null || missing+=("$pkg")
    elif ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then
      missing+=("$pkg")
    fi
  done
  install_missing "${missing[@]}"
}

# ensure_packages PKG ... — apt-get install the Debian packages that are not installed
# (for packages without a command to look for, e.g. a kernel image or busybox-static).
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  install_missing "${missing[@]}"
}

# install_missing PKG ... — apt-get install them (as root; otherwise say what is missing and how to get it).
install_missing() {
  [ $# -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "vswitch: missing system packages: $* (run as root to install them, or: sudo apt-get install $*)" >&2
    return 0
  fi
  echo "vswitch: installing $* ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_node_deps — npm ci when node_modules is missing or older than the lock file.
ensure_node_deps() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "vswitch: installing npm dependencies ..." >&2
    npm ci --no-audit --no-fund --loglevel=error
  fi
  # npm ci builds the native shim (binding.gyp); rebuild it if the build was removed.
  if [ ! -f build/Release/vswitch_native.node ]; then
    echo "vswitch: building the native shim ..." >&2
    npm run -s build:native >/dev/null
  fi
}

# build — compile TypeScript to dist/.
build() {
  rm -rf dist
  npx --no-install tsc -p . || { echo "vswitch: TypeScript build failed" >&2; return 1; }
  # npm install builds the native addon; rebuild it when its source changed since (a pull, an
  # edit), or the JavaScript would call functions the old addon does not have.
  local addon=build/Release/vswitch_native.node
  if [ -f "$addon" ] && { [ src/io/native/vswitch.c -nt "$addon" ] || [ binding.gyp -nt "$addon" ]; }; then
    npm run --silent build:native >/dev/null || { echo "vswitch: native addon build failed (npm run build:native)" >&2; return 1; }
  fi
}
