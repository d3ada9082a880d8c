//! `data_dir` permissions: it holds the store (every route, upstream and Lua source, and
//! the configuration history) and the generated admin key, so it is created 0700 and its
//! files 0600. A directory that already exists is left as it is: Portico did not make it,
//! and an operator may share it on purpose (a group-readable backup, say).

use std::io;
use std::path::Path;

/// Mode of a directory Portico creates for its data.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files Portico writes there.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with [`DIR_MODE`]; an existing one is kept as is.
pub fn create_private(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// Sets [`FILE_MODE`] on a file Portico owns (the store, whatever the umask was when it
/// was created).
pub fn make_private(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_dirs_are_private_existing_ones_untouched() {
        let base = std::env::temp_dir().join(format!("portico-datadir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("a/b");
        create_private(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750);
        let _ = std::fs::remove_dir_all(&base);
    }
}
