# Sourced by the demo scripts: a fresh CANDOR_DATA folder for a local stack, stopped and removed
# when the script exits, and step() to announce each part.
#   source scripts/local_stack.sh PREFIX
data=$(mktemp -d "${TMPDIR:-/tmp}/${1:?usage: source local_stack.sh PREFIX}.XXXXXX")
export CANDOR_DATA="$data"
cleanup() {
  if ! candor stack down >/dev/null 2>&1; then echo "warning: could not stop the stack in $data" >&2; fi
  rm -rf "$data"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
