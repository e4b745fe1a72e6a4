//! `cargo xtask images`: build the kit's two container images locally, with no registry.
//!
//! - `aca-job-lab/servicebus-emulator:dev`: our emulator, listening on 5672 (AMQP) and 5300 (health,
//!   administration API), and on 443 (the same over HTTPS) once a certificate is given
//!   (`SERVICEBUS_EMULATOR_TLS_CERT`, `SERVICEBUS_EMULATOR_TLS_KEY`).
//! - `aca-job-lab/servicebus-job:dev`: the worker, configured by the same env contract as in Azure.
//!
//! Both are `FROM scratch`: the base is reserved and never pulled, so this works on a machine whose Docker
//! engine has no images and no registry. Each build context holds the binary, the shared libraries `ldd`
//! lists (none for a static binary), an `/etc/passwd` with a non-root user, a CA bundle and an empty
//! `/tmp`. There is deliberately no `# syntax=` line: it would make BuildKit pull a frontend image.
//!
//! Two sources for the binaries:
//! - the default packages debug binaries. CI builds the workspace once for the tests, so `--prebuilt`
//!   packages what that build left in the target directory without compiling anything again;
//! - `--release` compiles statically linked glibc binaries, the small images for the workshop.
//!
//! Re-running is cheap: every input (binary, libraries, files, Dockerfile) is hashed into the label
//! [`HASH_LABEL`], and an image whose label already matches is left alone. A second label,
//! [`SOURCE_HASH_LABEL`], holds the hash of the sources the binary was built from
//! ([`aca_lab_testkit::sources`]): the container tests compare it with the work tree and refuse a
//! stale image, naming this command.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use aca_lab_testkit::sources::{EMULATOR_IMAGE, ImageSources, JOB_IMAGE, SOURCE_HASH_LABEL};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::util::{display_command, project_root, run_checked};

/// The label holding the hash of everything that went into an image.
pub const HASH_LABEL: &str = "aca-job-lab.content-hash";
/// The tag every local image gets; the testcontainers modules pin it.
pub const TAG: &str = "dev";
/// The target triple of the static release build (`--target` keeps `crt-static` away from proc-macros).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// `crt-static` links glibc in; the getrandom cfg avoids its `dlsym` lookup, which fails in a static binary.
const STATIC_RUSTFLAGS: &str =
    r#"-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom""#;
/// The unprivileged user both images run as.
const USER_ID: u32 = 10001;
/// Where the host keeps its CA bundle (Debian and derivatives); the worker needs one for TLS to Azure.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Build statically linked release binaries (small images) instead of packaging debug binaries.
    #[arg(long)]
    pub release: bool,
    /// Package the debug binaries already in the target directory (e.g. from
    /// `cargo test --workspace --all-features --no-run`) without running cargo.
    #[arg(long, conflicts_with = "release")]
    pub prebuilt: bool,
    /// Build only these images (default: all).
    #[arg(long = "only", value_enum)]
    pub only: Vec<ImageName>,
    /// Rebuild even when the image's content hash label already matches.
    #[arg(long)]
    pub force: bool,
    /// Print the plan and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ImagesArgs {
    /// Package the binaries a test build already produced (what `cargo xtask test` does after
    /// `cargo test --workspace --all-features --no-run`).
    pub fn prebuilt() -> Self {
        ImagesArgs {
            release: false,
            prebuilt: true,
            only: Vec::new(),
            force: false,
            dry_run: false,
        }
    }
}

/// Whether a Docker engine answers here (images can be built and container backends can run).
pub fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The images this task knows how to build.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ImageName {
    Emulator,
    Job,
}

/// Everything that describes one image, independent of where the binaries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub reference: String,
    pub package: &'static str,
    pub binary: &'static str,
    /// Files copied from the workspace into the image: (workspace-relative source, absolute destination).
    pub files: Vec<(&'static str, &'static str)>,
    pub dockerfile: String,
    /// The sources the binary is built from, hashed into [`SOURCE_HASH_LABEL`].
    pub sources: ImageSources,
    /// Empty directories the image's user can write (mount points for volumes).
    pub writable_dirs: Vec<&'static str>,
}

impl ImageName {
    pub fn spec(self) -> ImageSpec {
        match self {
            ImageName::Emulator => ImageSpec {
                reference: format!("aca-job-lab/servicebus-emulator:{TAG}"),
                package: "servicebus-emulator",
                binary: "servicebus-emulator",
                // The official emulator reads its config from this path; using the same one lets the
                // compose files and testcontainers modules mount a Config.json identically for both.
                files: vec![(
                    "lab/servicebus/Config.json",
                    "/ServiceBus_Emulator/ConfigFiles/Config.json",
                )],
                dockerfile: dockerfile(
                    "servicebus-emulator",
                    &["5672", "5300", "443"],
                    // The SDKs' admin clients call https://{namespace}:443 whatever the connection
                    // string says; the emulator serves it once a certificate is given, and without one
                    // this default waits quietly (an unprivileged user may bind 443 in a container:
                    // Docker opens the low ports to it).
                    &[("SERVICEBUS_EMULATOR_HTTPS_LISTEN", "0.0.0.0:443")],
                    &[
                        "--config",
                        "/ServiceBus_Emulator/ConfigFiles/Config.json",
                        "--listen",
                        "0.0.0.0:5672",
                        "--health-listen",
                        "0.0.0.0:5300",
                    ],
                    "A Service Bus compatible AMQP 1.0 emulator (aca-job-lab)",
                ),
                sources: EMULATOR_IMAGE,
                // `--data-dir` goes here when asked for (servicebus_emulator::testcontainers::DATA_DIR).
                // No VOLUME line: that would leave an anonymous volume behind every in-memory run.
                // A named volume mounted here starts with this directory's permissions.
                writable_dirs: vec!["/var/lib/servicebus-emulator"],
            },
            ImageName::Job => ImageSpec {
                reference: format!("aca-job-lab/servicebus-job:{TAG}"),
                package: "aca-job-lab",
                binary: "servicebus-job",
                files: vec![],
                dockerfile: dockerfile(
                    "servicebus-job",
                    &[],
                    &[],
                    &[],
                    "The aca-job-lab Container Apps job: drains a Service Bus queue in peek-lock",
                ),
                sources: JOB_IMAGE,
                writable_dirs: vec![],
            },
        }
    }
}

/// A `FROM scratch` Dockerfile over a prepared root filesystem.
fn dockerfile(
    binary: &str,
    ports: &[&str],
    env: &[(&str, &str)],
    cmd: &[&str],
    description: &str,
) -> String {
    let mut text = String::from("FROM scratch\nCOPY rootfs/ /\n");
    let _ = writeln!(text, "ENV SSL_CERT_FILE={HOST_CA_BUNDLE}");
    for (name, value) in env {
        let _ = writeln!(text, "ENV {name}={value}");
    }
    let _ = writeln!(text, "USER {USER_ID}:{USER_ID}");
    if !ports.is_empty() {
        let _ = writeln!(text, "EXPOSE {}", ports.join(" "));
    }
    let _ = writeln!(text, "ENTRYPOINT [\"/usr/local/bin/{binary}\"]");
    if !cmd.is_empty() {
        let quoted: Vec<String> = cmd.iter().map(|arg| format!("\"{arg}\"")).collect();
        let _ = writeln!(text, "CMD [{}]", quoted.join(", "));
    }
    let _ = writeln!(
        text,
        "LABEL org.opencontainers.image.description=\"{description}\""
    );
    text
}

/// `/etc/passwd` and `/etc/group` for the one unprivileged user (and root, which owns the files).
fn passwd() -> String {
    format!("root:x:0:0:root:/:/sbin/nologin\napp:x:{USER_ID}:{USER_ID}:app:/tmp:/sbin/nologin\n")
}

fn group() -> String {
    format!("root:x:0:\napp:x:{USER_ID}:\n")
}

/// Where the binaries come from, and what compiles them (if anything).
#[derive(Debug)]
pub struct Source {
    pub bin_dir: PathBuf,
    pub build: Option<Command>,
}

pub fn source(args: &ImagesArgs, target_dir: &Path, packages: &[&str]) -> Source {
    let mut build = crate::util::cargo();
    build.current_dir(project_root()).arg("build");
    for package in packages {
        build.args(["--package", package]);
    }
    build.arg("--bins");
    if args.release {
        build
            .args(["--release", "--target", STATIC_TARGET])
            .env("RUSTFLAGS", STATIC_RUSTFLAGS);
        Source {
            bin_dir: target_dir.join(STATIC_TARGET).join("release"),
            build: Some(build),
        }
    } else if args.prebuilt {
        Source {
            bin_dir: target_dir.join("debug"),
            build: None,
        }
    } else {
        Source {
            bin_dir: target_dir.join("debug"),
            build: Some(build),
        }
    }
}

pub fn run(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let root = project_root();
    let names: Vec<ImageName> = if args.only.is_empty() {
        vec![ImageName::Emulator, ImageName::Job]
    } else {
        args.only
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let specs: Vec<ImageSpec> = names.iter().map(|name| name.spec()).collect();
    let packages: Vec<&str> = specs.iter().map(|spec| spec.package).collect();
    let target_dir = crate::util::target_dir(&root)?;
    let Source { bin_dir, build } = source(&args, &target_dir, &packages);
    let contexts = target_dir.join("images");

    if args.dry_run {
        print!(
            "{}",
            plan_text(&args, &specs, &bin_dir, build.as_ref(), &contexts)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(mut build) = build {
        run_checked(&mut build, false)?;
    }
    let builder_env = legacy_builder_env();
    for spec in &specs {
        let started = std::time::Instant::now();
        let binary = bin_dir.join(spec.binary);
        let inputs = Inputs::collect(&root, spec, &binary)?;
        let hash = inputs.hash(spec)?;
        let source_hash = spec.sources.hash(&root)?;
        if !args.force
            && label(&spec.reference, HASH_LABEL).as_deref() == Some(hash.as_str())
            && label(&spec.reference, SOURCE_HASH_LABEL).as_deref() == Some(source_hash.as_str())
        {
            println!(
                "{} is up to date ({HASH_LABEL}={})",
                spec.reference,
                &hash[..12]
            );
            continue;
        }
        let context = contexts.join(spec.binary);
        inputs.write_context(spec, &context)?;
        let previous = image_id(&spec.reference);
        let mut docker = docker_build(spec, &hash, &source_hash, &context);
        if let Some((key, value)) = builder_env {
            docker.env(key, value);
        }
        run_captured(&mut docker)?;
        // The old image is now untagged; remove it so repeated builds do not pile up (best effort: a
        // container may still use it).
        if let Some(old) = previous
            && image_id(&spec.reference).as_ref() != Some(&old)
        {
            let _ = Command::new("docker").args(["image", "rm", &old]).output();
        }
        println!(
            "built {} ({}, {:.1} s)",
            spec.reference,
            image_size(&spec.reference).unwrap_or_else(|| "size unknown".into()),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan `--dry-run` prints: one line per step, commands exactly as they would run.
pub fn plan_text(
    args: &ImagesArgs,
    specs: &[ImageSpec],
    bin_dir: &Path,
    build: Option<&Command>,
    contexts: &Path,
) -> String {
    let mut out = String::new();
    match (build, args.release) {
        (Some(build), true) => {
            let _ = writeln!(
                out,
                "RUSTFLAGS='{STATIC_RUSTFLAGS}' {}",
                display_command(build)
            );
        }
        (Some(build), false) => {
            let _ = writeln!(out, "{}", display_command(build));
        }
        (None, _) => {
            let _ = writeln!(out, "# using the binaries already in {}", bin_dir.display());
        }
    }
    let _ = writeln!(
        out,
        "# docker build runs with DOCKER_BUILDKIT=0 unless the buildx plugin is installed"
    );
    for spec in specs {
        let binary = bin_dir.join(spec.binary);
        let context = contexts.join(spec.binary);
        let _ = writeln!(out, "# {}", spec.reference);
        let _ = writeln!(out, "ldd {}", binary.display());
        let _ = writeln!(
            out,
            "# stage {} (+ the libraries ldd lists, /etc/passwd, /etc/group, {HOST_CA_BUNDLE}{}) in {}",
            binary.display(),
            spec.files
                .iter()
                .map(|(src, dst)| format!(", {src} as {dst}"))
                .collect::<String>(),
            context.display()
        );
        let _ = writeln!(
            out,
            "# skip when the image's {HASH_LABEL} label equals the hash of those inputs and its \
             {SOURCE_HASH_LABEL} label the hash of {}",
            spec.sources
                .files
                .iter()
                .chain(spec.sources.rust_dirs)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "{}",
            display_command(&docker_build(spec, "<hash>", "<source-hash>", &context))
        );
    }
    out
}

/// Run a command whose chatter (e.g. the legacy builder's deprecation notice) is only worth showing
/// when it fails.
fn run_captured(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = display_command(cmd);
    eprintln!("$ {shown}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}` (is Docker installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn docker_build(spec: &ImageSpec, hash: &str, source_hash: &str, context: &Path) -> Command {
    let mut docker = Command::new("docker");
    docker
        .args(["build", "--quiet", "--tag", &spec.reference])
        .args(["--label", &format!("{HASH_LABEL}={hash}")])
        .args(["--label", &format!("{SOURCE_HASH_LABEL}={source_hash}")])
        .arg(context);
    docker
}

/// The legacy builder never contacts a registry for `FROM scratch`; BuildKit needs the buildx plugin,
/// which many engines (this CI machine's included) lack. Use BuildKit only when buildx is present.
fn legacy_builder_env() -> Option<(&'static str, &'static str)> {
    let buildx = Command::new("docker").args(["buildx", "version"]).output();
    match buildx {
        Ok(out) if out.status.success() => None,
        _ => Some(("DOCKER_BUILDKIT", "0")),
    }
}

/// One file of the image: where it comes from on the host, or its literal contents.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Host(PathBuf),
    Text(String),
}

/// Everything that goes into one image's root filesystem, keyed by the absolute path in the image.
#[derive(Debug)]
struct Inputs {
    files: Vec<(String, Content)>,
}

impl Inputs {
    fn collect(root: &Path, spec: &ImageSpec, binary: &Path) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "{} does not exist: build it first (`cargo build -p {} --bins`, or run without `--prebuilt`)",
                binary.display(),
                spec.package
            );
        }
        let mut files = vec![
            (
                format!("/usr/local/bin/{}", spec.binary),
                Content::Host(binary.to_path_buf()),
            ),
            ("/etc/passwd".to_string(), Content::Text(passwd())),
            ("/etc/group".to_string(), Content::Text(group())),
        ];
        let ca = Path::new(HOST_CA_BUNDLE);
        if !ca.is_file() {
            bail!(
                "{HOST_CA_BUNDLE} is missing: install the ca-certificates package (the worker needs it for TLS)"
            );
        }
        files.push((HOST_CA_BUNDLE.to_string(), Content::Host(ca.to_path_buf())));
        for (src, dst) in &spec.files {
            files.push(((*dst).to_string(), Content::Host(root.join(src))));
        }
        for lib in shared_libraries(binary)? {
            let in_image = lib.to_string_lossy().into_owned();
            files.push((in_image, Content::Host(lib)));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { files })
    }

    /// A hash over every path and byte of the root filesystem and the Dockerfile.
    fn hash(&self, spec: &ImageSpec) -> anyhow::Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(spec.dockerfile.as_bytes());
        for dir in &spec.writable_dirs {
            hasher.update(dir.as_bytes());
            hasher.update([0]);
        }
        for (path, content) in &self.files {
            hasher.update(path.as_bytes());
            hasher.update([0]);
            match content {
                Content::Text(text) => hasher.update(text.as_bytes()),
                Content::Host(src) => {
                    let mut file = std::fs::File::open(src)
                        .with_context(|| format!("could not read {}", src.display()))?;
                    std::io::copy(&mut file, &mut hasher)
                        .with_context(|| format!("could not read {}", src.display()))?;
                }
            }
            hasher.update([0]);
        }
        Ok(aca_lab_testkit::hex(&hasher.finalize()))
    }

    /// Lay out the build context: `Dockerfile` plus `rootfs/` mirroring the image.
    fn write_context(&self, spec: &ImageSpec, context: &Path) -> anyhow::Result<()> {
        if context.exists() {
            std::fs::remove_dir_all(context)
                .with_context(|| format!("could not clear {}", context.display()))?;
        }
        let rootfs = context.join("rootfs");
        // scratch has no /tmp; programs (and tempfile) expect a writable one.
        let tmp = rootfs.join("tmp");
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("could not create {}", tmp.display()))?;
        set_mode(&tmp, 0o1777)?;
        for dir in &spec.writable_dirs {
            let dir = rootfs.join(dir.trim_start_matches('/'));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
            set_mode(&dir, 0o1777)?;
        }
        for (path, content) in &self.files {
            let dst = rootfs.join(path.trim_start_matches('/'));
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("could not create {}", parent.display()))?;
            }
            match content {
                Content::Text(text) => std::fs::write(&dst, text),
                // `fs::copy` follows symlinks, so a library's versioned file lands under the name ld.so asks for.
                Content::Host(src) => std::fs::copy(src, &dst).map(drop),
            }
            .with_context(|| format!("could not write {}", dst.display()))?;
        }
        strip_debug_info(&rootfs.join("usr/local/bin").join(spec.binary));
        std::fs::write(context.join("Dockerfile"), &spec.dockerfile)
            .with_context(|| format!("could not write the Dockerfile in {}", context.display()))?;
        Ok(())
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}

/// Debug binaries carry line tables that panics would use; images do not need them and shrink a lot
/// without. Best effort: without `strip` on PATH the image is just bigger.
fn strip_debug_info(binary: &Path) {
    let _ = Command::new("strip")
        .arg("--strip-debug")
        .arg(binary)
        .output();
}

/// The shared libraries a binary loads, as absolute paths (empty for a static binary).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("could not run `ldd` to list the binary's shared libraries (install libc-bin)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // ldd exits 1 and says so for static binaries; that is the answer, not an error.
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if is_static(&stdout) || is_static(&stderr) {
            return Ok(Vec::new());
        }
        bail!("`ldd {}` failed: {}", binary.display(), stderr.trim());
    }
    parse_ldd(&stdout)
}

fn is_static(ldd_output: &str) -> bool {
    ldd_output.contains("not a dynamic executable") || ldd_output.contains("statically linked")
}

/// Parse `ldd` output: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`. The vDSO has no file and is skipped.
fn parse_ldd(output: &str) -> anyhow::Result<Vec<PathBuf>> {
    if is_static(output) {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let path = rest.split_whitespace().next().unwrap_or("");
                if path == "not" {
                    bail!(
                        "the binary needs {} which is not installed on this machine",
                        name.trim()
                    );
                }
                path
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A label of a local image, or `None` when the image or the label does not exist.
fn label(reference: &str, name: &str) -> Option<String> {
    let format = format!("{{{{ index .Config.Labels \"{name}\" }}}}");
    inspect(reference, &format)
}

fn image_id(reference: &str) -> Option<String> {
    inspect(reference, "{{.Id}}")
}

fn image_size(reference: &str) -> Option<String> {
    let bytes: f64 = inspect(reference, "{{.Size}}")?.parse().ok()?;
    Some(format!("{:.1} MiB", bytes / (1024.0 * 1024.0)))
}

fn inspect(reference: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", format, reference])
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !value.is_empty() && value != "<no value>").then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_becomes_the_library_paths_without_the_vdso() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f92)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f92)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f92)\n";
        let libs = parse_ldd(output).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_static_binary_needs_no_libraries() {
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        assert!(
            parse_ldd("\tnot a dynamic executable\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_missing_library_is_named() {
        let err = parse_ldd("\tlibssl.so.3 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libssl.so.3"), "{err}");
    }

    #[test]
    fn the_hash_changes_with_any_input_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"one").unwrap();
        let spec = ImageName::Job.spec();
        let inputs = Inputs {
            files: vec![("/usr/local/bin/x".into(), Content::Host(bin.clone()))],
        };
        let first = inputs.hash(&spec).unwrap();
        assert_eq!(first, inputs.hash(&spec).unwrap());
        std::fs::write(&bin, b"two").unwrap();
        assert_ne!(first, inputs.hash(&spec).unwrap());
        let renamed = Inputs {
            files: vec![("/usr/local/bin/y".into(), Content::Host(bin))],
        };
        assert_ne!(inputs.hash(&spec).unwrap(), renamed.hash(&spec).unwrap());
    }

    #[test]
    fn images_are_scratch_based_non_root_and_never_name_a_frontend() {
        for name in [ImageName::Emulator, ImageName::Job] {
            let spec = name.spec();
            assert!(
                spec.dockerfile.starts_with("FROM scratch\n"),
                "{}",
                spec.dockerfile
            );
            assert!(!spec.dockerfile.contains("# syntax"), "{}", spec.dockerfile);
            assert!(
                spec.dockerfile
                    .contains(&format!("USER {USER_ID}:{USER_ID}")),
                "{}",
                spec.dockerfile
            );
            assert!(passwd().contains(&format!("app:x:{USER_ID}:{USER_ID}")));
        }
    }

    #[test]
    fn the_emulator_image_serves_https_on_443_once_given_a_certificate() {
        let dockerfile = ImageName::Emulator.spec().dockerfile;
        assert!(
            dockerfile.contains("EXPOSE 5672 5300 443\n")
                && dockerfile.contains("ENV SERVICEBUS_EMULATOR_HTTPS_LISTEN=0.0.0.0:443\n"),
            "{dockerfile}"
        );
    }

    #[test]
    fn the_context_mirrors_the_image_and_has_a_world_writable_tmp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("servicebus-job");
        std::fs::write(&bin, b"#!binary").unwrap();
        let spec = ImageName::Job.spec();
        let inputs = Inputs {
            files: vec![
                ("/usr/local/bin/servicebus-job".into(), Content::Host(bin)),
                ("/etc/passwd".into(), Content::Text(passwd())),
            ],
        };
        let context = dir.path().join("ctx");
        inputs.write_context(&spec, &context).unwrap();
        assert_eq!(
            std::fs::read(context.join("rootfs/usr/local/bin/servicebus-job")).unwrap(),
            b"#!binary"
        );
        assert_eq!(
            std::fs::read_to_string(context.join("rootfs/etc/passwd")).unwrap(),
            passwd()
        );
        assert_eq!(
            std::fs::read_to_string(context.join("Dockerfile")).unwrap(),
            spec.dockerfile
        );
        let mode = std::fs::metadata(context.join("rootfs/tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }

    #[test]
    fn dry_run_prints_every_command_of_the_release_plan() {
        let args = ImagesArgs {
            release: true,
            prebuilt: false,
            only: vec![],
            force: false,
            dry_run: true,
        };
        let specs = [ImageName::Emulator.spec(), ImageName::Job.spec()];
        let target = Path::new("/target");
        let source = source(&args, target, &["servicebus-emulator", "aca-job-lab"]);
        let text = plan_text(
            &args,
            &specs,
            &source.bin_dir,
            source.build.as_ref(),
            &target.join("images"),
        );
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\S*cargo(\.exe)?\s", "cargo ");
        settings.bind(|| insta::assert_snapshot!(text));
    }

    #[test]
    fn prebuilt_packages_the_test_builds_debug_binaries_without_cargo() {
        let args = ImagesArgs {
            release: false,
            prebuilt: true,
            only: vec![],
            force: false,
            dry_run: true,
        };
        let source = source(&args, Path::new("/target"), &["aca-job-lab"]);
        assert_eq!(source.bin_dir, PathBuf::from("/target/debug"));
        assert!(source.build.is_none());
    }
}
