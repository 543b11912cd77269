# What every benchmark script shares; source it: `. "$(dirname "$0")/lib.sh"`.
#
#   ROOT, SHARED       the repository, and ../shared beside it (FERRY_SHARED overrides)
#   WORK               /dev/shm/ferry-peers (tmpfs: ext4 here loses its page cache)
#   corpus NAME        the path of the shared corpus NAME (small, mixed, big), made once
#                      with ../shared/corpus/make-corpus; "big" is always one 1 GiB log
#   median             the median of the numbers on stdin (mean of the middle two if even)
#   build_release DEST [cargo flags…]   a release build of this checkout, copied to DEST
#   build_at REV DEST  a release build of commit REV (in a throwaway worktree) at DEST
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FERRY_SHARED:-$ROOT/../shared}
TMP=/dev/shm
[ -d "$TMP" ] || TMP=${TMPDIR:-/tmp}
WORK="$TMP/ferry-peers"
mkdir -p "$WORK"
# The one size of the "big" corpus, for every script.
BIG_MIB=1024

corpus() {
  local dir="$WORK/corpus/$1"
  if [ ! -d "$dir" ]; then
    echo "making corpus $1…" >&2
    python3 "$SHARED/corpus/make-corpus" "$WORK/corpus" "$1" --big-mib "$BIG_MIB" >&2
  fi
  echo "$dir"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

build_release() {
  local dest=$1; shift
  (cd "$ROOT" && cargo build --release -q "$@" && cp target/release/ferry "$dest")
}

build_at() {
  local rev=$1 dest=$2 tree
  tree=$(mktemp -d "${TMPDIR:-/tmp}/ferry-at-XXXXXX")
  git -C "$ROOT" worktree add -q --detach "$tree" "$rev"
  # The same target directory: only what changed between the commits is rebuilt.
  (cd "$tree" && CARGO_TARGET_DIR="$ROOT/target/at" cargo build --release -q \
    && cp "$ROOT/target/at/release/ferry" "$dest")
  git -C "$ROOT" worktree remove --force "$tree"
}
