#!/usr/bin/env bash
# Creates .venv (if missing) and installs jq into it, editable, with the extras JQ_EXTRAS names
# (comma-separated, e.g. "dev" or "dev,bench"; empty: the runtime only). serve.sh asks for the
# runtime, test.sh for "dev", bench.sh for "dev,bench".
#
# pip runs only when something changed: every install leaves one stamp per part it installed
# (.venv/.jq-installed-runtime, .venv/.jq-installed-dev, …) holding the hash of pyproject.toml;
# when every part asked for has a stamp with the current hash, this script does nothing, so a
# restart of serve.sh goes straight to the server.
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
extras="${JQ_EXTRAS-dev}"
venv="$root/.venv"
digest="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"

parts=(runtime)
if [ -n "$extras" ]; then
    IFS=, read -r -a more <<<"$extras"
    parts+=("${more[@]}")
fi

current=yes
[ -x "$venv/bin/python" ] && [ -x "$venv/bin/jq" ] || current=no
for part in "${parts[@]}"; do
    [ "$(cat "$venv/.jq-installed-$part" 2>/dev/null)" = "$digest" ] || current=no
done
if [ "$current" = yes ]; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root${extras:+[$extras]}"
for part in "${parts[@]}"; do
    echo "$digest" >"$venv/.jq-installed-$part"
done
