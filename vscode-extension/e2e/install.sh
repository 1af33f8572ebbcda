#!/usr/bin/env bash
# Installs code-server and playwright-core offline-safe: `npm ci` from the committed lockfile.
#
# Two installers would otherwise fetch from outside npm (see ../../../shared/notes/vscode-e2e.md):
# - @vscode/ripgrep downloads rg from GitHub: it first looks in a cache in $TMPDIR, so Debian's rg
#   is placed there as the tarball it expects;
# - node-pty runs `npx node-gyp`, which asks before installing unless npm_config_yes is set.
set -euo pipefail
cd "$(dirname "$0")"
rg_bin=$(command -v rg) || { echo "install.sh: ripgrep (Debian package ripgrep) is required" >&2; exit 1; }
tmp=${TMPDIR:-/tmp}
for cache in vscode-ripgrep-cache-1.15.11; do
  mkdir -p "$tmp/$cache"
  tarball="$tmp/$cache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
  if [ ! -s "$tarball" ]; then
    stage=$(mktemp -d)
    cp "$rg_bin" "$stage/rg"
    tar -C "$stage" -czf "$tarball" rg
    rm -rf "$stage"
  fi
done
export npm_config_yes=true
npm ci --unsafe-perm --foreground-scripts --no-audit --no-fund
