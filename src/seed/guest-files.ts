// The user's allowlisted write_files, written in the guest AS THE USER.
// cloud-init's write_files runs as root and writes by path: util.write_file
// makes the parents with os.makedirs, opens with open(path, "wb"/"ab"),
// then chmods and chowns by path, all following symlinks. The deferred
// entries run in the final stage, when the user can already log in with
// their keys and plant ~/x -> /etc/passwd. So write_files only stages each
// file, root-only, where the user cannot reach, and one fixed runcmd entry per
// file copies it to its place as the user, with the user's rights and nothing more.

/** Root-only staging in the guest; /var/lib is root's, so nothing on the way there is the user's. */
export const GUEST_STAGING_DIR = '/var/lib/vtorque/user-files';

/**
 * sh -c PUT_AS_USER sh USER TARGET STAGED MODE APPEND, as root. The only
 * text of the user's (TARGET) arrives as a positional parameter; cloud-init
 * single-quotes each argv item of a runcmd list (util.shellify). The root
 * part opens the staged file (root's) for stdin; runuser drops to the user
 * before TARGET is looked up, so a symlink there reaches only what the user
 * could write anyway. /workspace, when the image lacks it, is made for the
 * user by root: its parent is /, which only root can change.
 */
export const PUT_AS_USER = [
  'user=$1 target=$2 staged=$3 mode=$4 append=$5',
  'case $target in /workspace/*) if mkdir -m 0755 /workspace 2>/dev/null; then chown -- "$user" /workspace; fi ;; esac',
  `runuser -u "$user" -- sh -c 'umask 077; mkdir -p -- "\${1%/*}" || exit; if [ "$3" = true ]; then cat >> "$1"; else cat > "$1"; fi && chmod -- "$2" "$1"' sh "$target" "$mode" "$append" < "$staged"`,
  'rc=$?',
  'rm -f -- "$staged"',
  'exit $rc',
].join('; ');

/** One user file, checked (user-metadata.ts): content as base64, decoded by cloud-init into the staging file. */
export interface UserFile {
  /** Absolute, under the user's home or /workspace, one safe line. */
  path: string;
  /** Strict base64 (of gzip data for gz+b64). */
  content: string;
  encoding: 'b64' | 'gz+b64';
  /** Octal, 4 digits, no set-id or sticky bits. */
  permissions: string;
  append: boolean;
}

/** write_files entries (staging, root-only) and runcmd entries (copy as the user), in file order. */
export function stagedUserFiles(user: string, files: readonly UserFile[]): { writeFiles: Record<string, unknown>[]; runcmd: string[][] } {
  const writeFiles: Record<string, unknown>[] = [];
  const runcmd: string[][] = [];
  files.forEach((f, i) => {
    const staged = `${GUEST_STAGING_DIR}/${i}`;
    // Not deferred: staged in the init stage, long before runcmd (final stage) needs it.
    writeFiles.push({ path: staged, content: f.content, encoding: f.encoding, owner: 'root:root', permissions: '0600' });
    runcmd.push(['sh', '-c', PUT_AS_USER, 'sh', user, f.path, staged, f.permissions, f.append ? 'true' : 'false']);
  });
  return { writeFiles, runcmd };
}
