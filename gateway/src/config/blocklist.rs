//! `[blocklist]`: domains and networks refused on every route, from the config and from a
//! file read (and watched) with it.

use std::path::{Path, PathBuf};

use super::parse::resolve;
use super::{file, read_text, ConfigError, MAX_BLOCKLIST_FILE};

/// `[blocklist]`, validated: the file is read when the config is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlocklistConfig {
    /// The blocked domains and networks: `entries` and the lines of `file` together.
    pub list: crate::blocklist::Blocklist,
    /// Watched with the config file: a change reloads the config.
    pub file: Option<PathBuf>,
}

pub(super) fn validate_blocklist(
    b: &file::BlocklistSection,
    base: &Path,
) -> Result<BlocklistConfig, ConfigError> {
    let mut list = crate::blocklist::Blocklist::default();
    for (i, entry) in b.entries.iter().enumerate() {
        list.add(entry)
            .map_err(|m| ConfigError::field(format!("blocklist.entries[{i}]"), m))?;
    }
    let file = b.file.as_deref().map(|f| resolve(base, f));
    if let Some(path) = &file {
        let text = read_text(path, MAX_BLOCKLIST_FILE).map_err(|e| {
            ConfigError::field("blocklist.file", format!("{}: {e}", path.display()))
        })?;
        list.add_file(&text).map_err(|m| {
            ConfigError::field("blocklist.file", format!("{}: {m}", path.display()))
        })?;
    }
    Ok(BlocklistConfig { list, file })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{field_of, parse, tempfile_dir, MINIMAL};
    use super::super::ConfigError;

    #[test]
    fn blocklist_and_trusted_proxies_are_validated() {
        let proxies =
            format!("{MINIMAL}[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n");
        assert_eq!(field_of(&proxies), "forwarding.trusted_proxies[1]");
        let entries = format!("{MINIMAL}[blocklist]\nentries = [\"evil.example\", \"192.0.2.0/24\", \"not a domain\"]\n");
        assert_eq!(field_of(&entries), "blocklist.entries[2]");
        let dir = tempfile_dir();
        let file = dir.join("blocklist.txt");
        std::fs::write(&file, "evil.example\n# a comment\n192.0.2.0/24\n").unwrap();
        let with_file = format!(
            "{MINIMAL}[blocklist]\nfile = {:?}\nentries = [\"spam.example\"]\n",
            file.display().to_string()
        );
        let c = parse(&with_file).unwrap();
        assert_eq!(c.blocklist.list.len(), 3);
        assert_eq!(c.blocklist.file.as_deref(), Some(file.as_path()));
        std::fs::write(&file, "evil.example\nbad entry\n").unwrap();
        match parse(&with_file) {
            Err(ConfigError::Field { field, message }) => {
                assert_eq!(field, "blocklist.file");
                assert!(message.contains("line 2"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let missing = format!("{MINIMAL}[blocklist]\nfile = \"/nonexistent/blocklist.txt\"\n");
        assert_eq!(field_of(&missing), "blocklist.file");
    }
}
