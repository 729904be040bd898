//! The POSIX shell scripts that run in the guest (Debian's dash, git 2.39,
//! GNU tar, util-linux flock), each started as `sh -c SCRIPT NAME ARGS...`
//! so that no argument is ever parsed by a shell.

/// Waits up to 30 s for the work disk on `/root` when fstab lists it, and
/// ends the script with `fail CODE` when it does not appear.
///
/// fstab mounts the work disk with `nofail`, which does not order the mount
/// before local-fs.target, so right after boot the agent can run commands
/// before `/root` is mounted. Files written there then end up hidden under
/// the mount, and directories on the work disk look missing.
macro_rules! wait_for_work_disk {
    ($code:literal) => {
        concat!(
            r#"if awk '$1 !~ /^#/ && $2 == "/root" { found = 1 } END { exit !found }' /etc/fstab 2>/dev/null; then
    tries=0
    until grep -qs ' /root ' /proc/mounts; do
        tries=$((tries + 1))
        [ "$tries" -le 300 ] || fail "#,
            stringify!($code),
            r#" "the work disk is not mounted on /root after 30 s"
        sleep 0.1
    done
fi
"#
        )
    };
}

/// Defines the shell function `unexported_work DIR`, which prints what
/// replacing DIR would discard, and nothing when that is nothing:
///
/// - `work FILES COMMITS` for a banger workspace. FILES counts the paths
///   whose content differs from the tree the last prepare copied
///   (`refs/banger/prepared`, or HEAD for a workspace without that ref),
///   committed or not, untracked files included and ignored ones not.
///   COMMITS counts the commits reachable from HEAD or a local branch but
///   not from the commit the last prepare copied.
/// - `foreign ENTRIES` for a non-empty directory without the
///   `.git/banger-workspace` marker, or anything else that is not a
///   directory (ENTRIES is 1 then).
///
/// It stages the work tree into a copy of the index with its new objects in
/// a scratch directory next to DIR, so the repository stays as it was. The
/// scratch directory's name starts with `.banger-prepare.`, so a prepare
/// removes it when a killed check left it behind. It runs in a subshell and
/// exits non-zero when git fails.
macro_rules! unexported_work_fn {
    () => {
        r#"unexported_work() (
    dir=$1
    if [ ! -f "$dir/.git/banger-workspace" ]; then
        if [ -d "$dir" ] && [ ! -L "$dir" ]; then
            entries=$(ls -A "$dir" | wc -l) || exit 1
        else
            entries=1
        fi
        [ "$entries" -eq 0 ] || echo "foreign $((entries))"
        exit 0
    fi
    cd "$dir" || exit 1
    if base_tree=$(git rev-parse -q --verify "refs/banger/prepared^{tree}"); then :
    elif base_tree=$(git rev-parse -q --verify "HEAD^{tree}"); then :
    else base_tree=4b825dc642cb6eb9a060e54bf8d69288fbee4904
    fi
    scratch=$(mktemp -d "${dir%/*}/.banger-prepare.check.XXXXXX") || exit 1
    trap 'rm -rf "$scratch"' EXIT
    mkdir "$scratch/objects" || exit 1
    real_index=$(git rev-parse --git-path index) || exit 1
    if [ -f "$real_index" ]; then cp "$real_index" "$scratch/index" || exit 1; fi
    GIT_INDEX_FILE="$scratch/index" GIT_OBJECT_DIRECTORY="$scratch/objects" \
        GIT_ALTERNATE_OBJECT_DIRECTORIES="$dir/.git/objects" git add -A || exit 1
    GIT_INDEX_FILE="$scratch/index" GIT_OBJECT_DIRECTORY="$scratch/objects" \
        GIT_ALTERNATE_OBJECT_DIRECTORIES="$dir/.git/objects" \
        git diff --cached --name-only -z --no-renames "$base_tree" -- >"$scratch/names" || exit 1
    files=$(tr -cd '\000' <"$scratch/names" | wc -c) || exit 1
    prepared_head=$(cat .git/banger-workspace) || exit 1
    set --
    if head=$(git rev-parse -q --verify HEAD); then set -- "$head"; fi
    if [ -n "$prepared_head" ] && git rev-parse -q --verify "$prepared_head^{commit}" >/dev/null; then
        set -- "$@" --not "$prepared_head"
    fi
    commits=$(git rev-list --count --branches "$@") || exit 1
    if [ "$files" -ne 0 ] || [ "$commits" -ne 0 ]; then echo "work $((files)) $((commits))"; fi
)
"#
    };
}

/// Receives the archive of [`super::archive`] on standard input and puts
/// the repository in place.
///
/// Arguments: target directory, KiB needed, HEAD commit (empty for a
/// repository without commits), branch (empty when detached), user.name,
/// user.email, base commit (empty for a full copy), force (`1` to replace
/// a banger workspace whatever it contains).
///
/// Before it changes anything it checks the target with `unexported_work`
/// (see [`unexported_work_fn`]). It prints `banger-workspace-unexported`
/// and that function's output and exits 10 when the target contains work
/// the copy would discard, unless force is set and the target is a banger
/// workspace. A non-empty directory that banger did not make is never
/// replaced.
///
/// It extracts into a temporary directory next to the target and rebuilds
/// the git repository from the bundle at the same commit and branch. With a
/// base commit the earlier workspace at the target must have it: its
/// objects are hard-linked into the new repository and the bundle carries
/// only the commits after the base, or is absent when HEAD is the base.
/// `read-tree` sets only the index, so the extracted files stay as they
/// are. Only then does it rename the result into place, replacing what was
/// at the target. The ignored files of an earlier workspace then move into
/// the new copy wherever it has nothing at their path. On any failure the EXIT trap removes the temporary
/// directory and the target is left as it was. The last line on success is
/// `banger-workspace-prepared COMMIT`. The ref [`PREPARED_REF`] names the
/// tree as copied, for `workspace export --since-prepare`.
///
/// Exit codes: 4 not enough free space, 5 a tool is missing, 6 the bundle
/// holds another commit, 7 another prepare runs, 8 the work disk is not
/// mounted, 9 the earlier workspace lacks the base commit, 10 the target
/// contains work that is not exported, 11 the check for that work failed;
/// others come from the failed tool.
pub const PREPARE: &str = concat!(
    r#"set -eu
target=$1 need_kb=$2 head=$3 branch=$4 name=$5 email=$6 base=${7:-} force=${8:-}
PREPARED_REF=refs/banger/prepared
fail() { code=$1; shift; printf 'banger: %s\n' "$*" >&2; exit "$code"; }
"#,
    unexported_work_fn!(),
    r#"for tool in git tar flock df; do
    command -v "$tool" >/dev/null 2>&1 || fail 5 "$tool is not installed in the guest"
done
exec 9>"${BANGER_PREPARE_LOCK:-/run/banger-prepare.lock}"
flock -n 9 || fail 7 "another workspace prepare is running in this guest"
"#,
    wait_for_work_disk!(8),
    r#"if [ -e "$target" ] || [ -L "$target" ]; then
    # Force discards work in a banger workspace, never a directory that
    # banger did not make (such as /usr with a mistyped --guest-path).
    work=
    if [ -z "$force" ] || [ ! -f "$target/.git/banger-workspace" ]; then
        work=$(unexported_work "$target") || fail 11 "failed to check $target for work that is not exported"
    fi
    case $work in
    foreign*) ;;
    *) [ -z "$force" ] || work= ;;
    esac
    if [ -n "$work" ]; then
        echo "banger-workspace-unexported $work"
        fail 10 "$target contains work that replacing it would discard"
    fi
fi
parent=${target%/*}
[ -n "$parent" ] || parent=/
mkdir -p "$parent"
if [ -n "$base" ]; then
    [ -f "$target/.git/banger-workspace" ] &&
        git -C "$target" rev-parse -q --verify "$base^{commit}" >/dev/null ||
        fail 9 "the workspace in $target lacks commit $base"
fi
# Left over from a prepare that was killed; the lock rules out a running one.
rm -rf "$parent"/.banger-prepare.*
avail=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
[ "$avail" -ge "$need_kb" ] ||
    fail 4 "not enough space on the disk of $parent: $need_kb KiB needed, $avail KiB free"
tmp=$(mktemp -d "$parent/.banger-prepare.XXXXXX")
trap 'cd /; rm -rf "$tmp"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
tar -x -f - -C "$tmp" --no-same-owner
mkdir -p "$tmp/tree"
cd "$tmp/tree"
if [ -n "$branch" ]; then git init -q -b "$branch"; else git init -q; fi
[ -z "$name" ] || git config user.name "$name"
[ -z "$email" ] || git config user.email "$email"
# Objects are never changed in place, so the earlier copy's can be shared.
[ -z "$base" ] || cp -al "$target/.git/objects/." .git/objects/
if [ -n "$head" ]; then
    if [ -f "$tmp/head.bundle" ]; then
        git fetch -q "$tmp/head.bundle" HEAD
        fetched=$(git rev-parse FETCH_HEAD)
    else
        fetched=$(git rev-parse -q --verify "$head^{commit}") || fetched=none
    fi
    [ "$fetched" = "$head" ] || fail 6 "the bundle holds commit $fetched, expected $head"
    if [ -n "$branch" ]; then
        git update-ref "refs/heads/$branch" "$head"
    else
        git update-ref --no-deref HEAD "$head"
    fi
    rm -f .git/FETCH_HEAD
    git read-tree HEAD
    git update-index -q --refresh >/dev/null || true
fi
# The tree as copied, uncommitted and untracked files included, for an
# export of only the changes made in the guest. Starting from the refreshed
# index, `add` hashes only the files that differ from HEAD.
if [ -f .git/index ]; then cp .git/index "$tmp/prepared.index"; fi
GIT_INDEX_FILE="$tmp/prepared.index" git add -A
prepared=$(GIT_INDEX_FILE="$tmp/prepared.index" git write-tree)
git update-ref "$PREPARED_REF" "$prepared"
printf '%s\n' "$head" >.git/banger-workspace
cd /
if [ -e "$target" ]; then mv "$target" "$tmp/old"; fi
if ! mv "$tmp/tree" "$target"; then
    [ ! -e "$tmp/old" ] || mv "$tmp/old" "$target"
    fail 1 "failed to move the copy to $target"
fi
# Ignored files of the earlier workspace (build output such as target/ or
# node_modules/) move into the new copy wherever it has nothing at that
# path, so a prepare does not throw away the guest's build caches. A path
# that cannot move is removed with the earlier copy.
if [ -f "$tmp/old/.git/banger-workspace" ]; then
    git -C "$tmp/old" ls-files -z --others --ignored --exclude-standard --directory |
        xargs -0 -r sh -c 'from=$1 to=$2
            shift 2
            for path do
                path=${path%/}
                [ -e "$to/$path" ] || [ -L "$to/$path" ] && continue
                mkdir -p "$(dirname "$to/$path")" 2>/dev/null &&
                    mv "$from/$path" "$to/$path" 2>/dev/null || true
            done' keep-ignored "$tmp/old" "$target" || true
fi
sync
echo "banger-workspace-prepared ${head:-none}"
"#
);

/// Prints `banger-workspace-unexported` and the output of
/// `unexported_work` (see [`unexported_work_fn`]) for the directory `$1`
/// when it contains work that a prepare would discard, and nothing otherwise,
/// for `workspace prepare --dry-run`. It changes nothing in the guest.
///
/// Exit codes: 7 a prepare runs, 8 the work disk is not mounted, 11 the
/// check failed.
pub const CHECK: &str = concat!(
    r#"set -eu
target=$1
fail() { code=$1; shift; printf 'banger: %s\n' "$*" >&2; exit "$code"; }
"#,
    unexported_work_fn!(),
    r#"exec 9>"${BANGER_PREPARE_LOCK:-/run/banger-prepare.lock}"
flock -n 9 || fail 7 "another workspace prepare is running in this guest"
"#,
    wait_for_work_disk!(8),
    r#"if [ -e "$target" ] || [ -L "$target" ]; then
    work=$(unexported_work "$target") || fail 11 "failed to check $target for work that is not exported"
    [ -z "$work" ] || echo "banger-workspace-unexported $work"
fi
"#
);

/// Prints a binary diff of the work tree at `$1` (tracked and untracked,
/// not ignored files) against commit `$2`. It stages into a copy of the
/// index, so the repository's own index stays as it was.
pub const EXPORT: &str = r#"set -eu
dir=$1 base=$2
cd "$dir"
index=$(mktemp)
trap 'rm -f "$index"' EXIT
real_index=$(git rev-parse --git-path index)
if [ -f "$real_index" ]; then cp "$real_index" "$index"; else rm -f "$index"; fi
export GIT_INDEX_FILE="$index"
git add -A
git -c diff.noprefix=false -c diff.mnemonicPrefix=false \
    diff --cached --binary --no-color --no-ext-diff --no-textconv "$base" --
"#;

/// Changes to directory `$1`, then runs the rest of the arguments through
/// `mise exec --` when mise is on the guest's PATH, so the tools a
/// project's mise configuration pins are used, and plainly otherwise.
/// `exec` keeps the command's exit code and signal. Exit code 125: the work
/// disk did not appear; 126: the directory is missing.
pub const EXEC_WRAPPER: &str = concat!(
    r#"dir=$1
shift
fail() { code=$1; shift; printf 'banger-agent: %s\n' "$*" >&2; exit "$code"; }
if ! grep -qs ' /root ' /proc/mounts; then
"#,
    wait_for_work_disk!(125),
    r#"fi
[ -d "$dir" ] || fail 126 "directory $dir does not exist in the guest; prepare the workspace there or choose another --guest-path"
cd "$dir" || exit 126
if command -v mise >/dev/null 2>&1; then exec mise exec -- "$@"; fi
# The same messages and codes as the agent gives for a program that is
# missing or not executable, instead of the shell's own with a line number.
case $1 in
*/*)
    [ -e "$1" ] || fail 127 "$1: no such file"
    [ -d "$1" ] && fail 126 "$1: is a directory"
    [ -x "$1" ] || fail 126 "$1: permission denied (the file is not executable)"
    ;;
*) command -v "$1" >/dev/null 2>&1 || fail 127 "$1: command not found" ;;
esac
exec "$@"
"#
);

/// Ref in the guest repository that names the tree as the last prepare
/// copied it (tracked files with the host's uncommitted changes, and the
/// untracked files copied with them).
pub const PREPARED_REF: &str = "refs/banger/prepared";

/// The object id of git's empty tree, the base of an export from a
/// repository that had no commit when it was prepared.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// `sh -c SCRIPT NAME ARGS...` as an argv.
pub fn sh_argv(script: &str, name: &str, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        name.to_string(),
    ];
    argv.extend(args);
    argv
}
