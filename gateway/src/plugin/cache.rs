//! Compiled plugins kept on disk (`server.plugin_cache`), so a restart loads machine code
//! instead of compiling every component again.
//!
//! An entry is named by the SHA-256 of the component file and a hash of everything the
//! machine code depends on: the wasmtime version and the engine's settings
//! ([`Engine::precompile_compatibility_hash`]), and this gateway's version. A component
//! that changed, or an upgraded gateway, finds no entry and compiles; nothing is ever
//! invalidated by hand. Each file starts with the SHA-256 of the rest, checked before the
//! rest is handed to wasmtime, so a truncated or corrupted entry is compiled again (and
//! counted) rather than loaded. Entries are written to a temporary file and renamed into
//! place, so gateways sharing a directory never see half an entry.
//!
//! Loading machine code means running it: the directory must be writable by the gateway's
//! user only. A directory others may write to is refused (an error naming the field), as is
//! anything but a directory. The directory holds at most [`MAX_BYTES`]: past it, the entries
//! used least recently are deleted.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// Largest total size of the cache directory's entries.
pub const MAX_BYTES: u64 = 512 << 20;
/// Largest entry read back.
const MAX_ENTRY: u64 = 256 << 20;
const SUFFIX: &str = ".fgc";

/// Where a component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the cache.
    Cached,
    /// Compiled (and stored, when there is a cache).
    Compiled,
    /// Compiled because the cached entry could not be used (corrupt, incompatible).
    CacheError,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cached => "cached",
            Source::Compiled => "compiled",
            Source::CacheError => "cache_error",
        }
    }
}

/// A cache directory, checked.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    engine: String,
}

impl Cache {
    /// Opens (creating it, mode 0700, if missing) the cache directory for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Cache, String> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
        let field = |e: String| format!("server.plugin_cache: {}: {e}", dir.display());
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| field(format!("cannot create it: {e}")))?,
            Err(e) => return Err(field(e.to_string())),
            Ok(_) => {}
        }
        let meta = std::fs::metadata(dir).map_err(|e| field(e.to_string()))?;
        if !meta.is_dir() {
            return Err(field("not a directory".into()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(field(format!(
                "writable by other users (mode {:o}): machine code loaded from it runs in the \
                 gateway; make it writable by the gateway's user only",
                meta.mode() & 0o7777
            )));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Ok(Cache {
            dir: dir.to_path_buf(),
            engine: format!("{:016x}", h.finish()),
        })
    }

    fn entry(&self, digest: &[u8; 32]) -> PathBuf {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{}{SUFFIX}", self.engine))
    }

    /// The component of `bytes` (whose SHA-256 is `digest`): from the cache when it has a
    /// usable entry, compiled (and stored) otherwise.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> Result<(Component, Source), String> {
        let path = self.entry(digest);
        let mut source = Source::Compiled;
        match self.read(engine, &path) {
            Ok(Some(c)) => return Ok((c, Source::Cached)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(entry = %path.display(), error = %e, "unusable compiled plugin in the cache; compiling it again");
                source = Source::CacheError;
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| super::compile_error(&e, bytes))?;
        if let Err(e) = self.write(&path, &artifact) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not store a compiled plugin; the next start compiles it again");
        } else {
            self.prune(&path);
        }
        // SAFETY: `artifact` was made by `precompile_component` of this very engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &artifact) }
            .map_err(|e| format!("loading the compiled component: {e:#}"))?;
        Ok((component, source))
    }

    /// The entry at `path`, `None` when there is none; an error when there is one that
    /// cannot be used.
    fn read(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        use sha2::Digest as _;
        let file = match crate::config::read_file(path, MAX_ENTRY) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let Some((sum, artifact)) = file.split_first_chunk::<32>() else {
            return Err("shorter than its checksum".into());
        };
        if sha2::Sha256::digest(artifact).as_slice() != sum {
            return Err("checksum mismatch (truncated or corrupted)".into());
        }
        // SAFETY: the bytes are, checksum verified, what `write` stored: the output of
        // `precompile_component` of an engine whose compatibility hash is part of the
        // entry's name. wasmtime checks the artifact's header against this engine again
        // and refuses a mismatch. The directory is writable by the gateway's user only
        // (checked in `open`).
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("{e:#}"))?;
        // Touched, so pruning removes the entries used least recently.
        let _ =
            std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Ok(Some(component))
    }

    fn write(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        use sha2::Digest as _;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&sha2::Sha256::digest(artifact))?;
            f.write_all(artifact)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Deletes the entries used least recently while the directory holds more than
    /// [`MAX_BYTES`]; `keep` (just written) stays.
    fn prune(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(SUFFIX)))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= MAX_BYTES {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}
