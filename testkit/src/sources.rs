//! Which sources an image is built from, and their hash.
//!
//! `cargo xtask images` writes the hash into the label [`SOURCE_HASH_LABEL`]; the container tests
//! compute it again from the work tree and refuse an image whose label differs, naming the command
//! that rebuilds it. The hash is over sources rather than the binary because the tests cannot rebuild
//! the binary the image holds (the image task may build it with other features or as a static release
//! binary); the image task's own content hash still decides whether a rebuild changes anything.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The image label that holds the hash of the sources the image was built from.
pub const SOURCE_HASH_LABEL: &str = "aca-job-lab.source-hash";

/// The files whose change makes an image stale, relative to the workspace root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSources {
    /// Single files: manifests, the lock file, data baked into the binary or the image, the recipe.
    pub files: &'static [&'static str],
    /// Directories whose `.rs` files (at any depth) are the crate's code. Only `.rs`: a test run's
    /// leftover snapshot files there must not make an image look stale in the middle of that run.
    pub rust_dirs: &'static [&'static str],
}

// Both images depend on the workspace manifest and lock file (dependency versions) and on the recipe
// that lays out the image (`xtask/src/images.rs`).

/// `aca-job-lab/servicebus-emulator`: the emulator crate and the Config.json it embeds and ships.
pub const EMULATOR_IMAGE: ImageSources = ImageSources {
    files: &[
        "Cargo.toml",
        "Cargo.lock",
        "xtask/src/images.rs",
        "emulator/Cargo.toml",
        "lab/servicebus/Config.json",
    ],
    rust_dirs: &["emulator/src"],
};

/// `aca-job-lab/servicebus-job`: the worker crate at the workspace root.
pub const JOB_IMAGE: ImageSources = ImageSources {
    files: &["Cargo.toml", "Cargo.lock", "xtask/src/images.rs"],
    rust_dirs: &["src"],
};

/// A source file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("could not read {path} to hash the image's sources: {error}")]
pub struct SourceError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl ImageSources {
    /// The workspace-relative paths hashed, sorted, with `/` separators.
    pub fn paths(&self, root: &Path) -> Result<Vec<String>, SourceError> {
        let mut paths: Vec<String> = self.files.iter().map(|f| (*f).to_owned()).collect();
        for dir in self.rust_dirs {
            collect_rust_files(root, Path::new(dir), &mut paths)?;
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// SHA-256 over every path and its bytes, as lowercase hex.
    pub fn hash(&self, root: &Path) -> Result<String, SourceError> {
        let mut hasher = Sha256::new();
        for path in self.paths(root)? {
            let full = root.join(&path);
            let bytes = std::fs::read(&full).map_err(|error| SourceError { path: full, error })?;
            hasher.update(path.as_bytes());
            hasher.update([0]);
            hasher.update(&bytes);
            hasher.update([0]);
        }
        Ok(crate::hex(&hasher.finalize()))
    }
}

fn collect_rust_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), SourceError> {
    let full = root.join(dir);
    let entries = std::fs::read_dir(&full).map_err(|error| SourceError {
        path: full.clone(),
        error,
    })?;
    for entry in entries {
        let entry = entry.map_err(|error| SourceError {
            path: full.clone(),
            error,
        })?;
        let relative = dir.join(entry.file_name());
        let kind = entry.file_type().map_err(|error| SourceError {
            path: root.join(&relative),
            error,
        })?;
        if kind.is_dir() {
            collect_rust_files(root, &relative, out)?;
        } else if relative.extension().is_some_and(|ext| ext == "rs") {
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: ImageSources = ImageSources {
        files: &["Cargo.toml"],
        rust_dirs: &["src"],
    };

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/nested/snapshots")).unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.path().join("src/nested/mod.rs"), "").unwrap();
        dir
    }

    #[test]
    fn the_hash_covers_the_files_and_rust_code_and_nothing_else() {
        let dir = tree();
        let root = dir.path();
        assert_eq!(
            SAMPLE.paths(root).unwrap(),
            ["Cargo.toml", "src/main.rs", "src/nested/mod.rs"]
        );
        let first = SAMPLE.hash(root).unwrap();
        assert_eq!(first, SAMPLE.hash(root).unwrap());

        // A snapshot left by a failing test is not a source.
        std::fs::write(root.join("src/nested/snapshots/x.snap.new"), "new").unwrap();
        assert_eq!(first, SAMPLE.hash(root).unwrap());

        std::fs::write(root.join("src/nested/mod.rs"), "// changed").unwrap();
        let changed = SAMPLE.hash(root).unwrap();
        assert_ne!(first, changed);
        std::fs::write(root.join("src/nested/more.rs"), "").unwrap();
        assert_ne!(changed, SAMPLE.hash(root).unwrap());
    }

    #[test]
    fn a_missing_source_is_named() {
        let dir = tree();
        std::fs::remove_file(dir.path().join("Cargo.toml")).unwrap();
        let error = SAMPLE.hash(dir.path()).unwrap_err();
        assert!(error.path.ends_with("Cargo.toml"), "{error}");
    }

    #[test]
    fn every_listed_source_of_the_images_exists_in_this_workspace() {
        let root = crate::workspace_root();
        for image in [EMULATOR_IMAGE, JOB_IMAGE] {
            let paths = image.paths(&root).unwrap();
            assert!(paths.iter().any(|p| p.ends_with("main.rs")), "{paths:?}");
            image.hash(&root).unwrap();
        }
    }
}
