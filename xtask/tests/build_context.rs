//! What an image build would upload from the repository root, by the repository's `.dockerignore`:
//! never Terraform state, state backups or plans (they hold the Service Bus namespace's keys and
//! connection strings), nor `.lab/`, `.venv/` or `target/`; always what the Dockerfile builds from.
//!
//! Two programs upload this context and each reads `.dockerignore` its own way, so both are applied:
//! - `docker build`: moby's `patternmatcher` (with `ignorefile.ReadAll` reading the file), the matcher
//!   BuildKit and the classic builder share. [`DockerIgnore`] follows its rules: lines starting with `#`
//!   are comments, patterns are trimmed and `filepath.Clean`ed (a trailing `/` goes), a leading `/` is
//!   dropped, `!` re-includes, the last matching pattern wins, and a pattern matches a path when it
//!   matches the path or one of its parent directories. Patterns are anchored at the context root;
//!   `*` and `?` stay within one path element, `**` spans any number of them, and a pattern compiles to
//!   an exact, prefix, suffix or regular-expression test exactly as `Pattern.compile` decides.
//! - `az acr build`: the Azure CLI's own matcher (`acr/_archive_utils.py`, `IgnoreRule` and
//!   `_pack_source_code`): each line is only right-trimmed; `**` becomes `.*`, `*` `[^/]*`, `?`
//!   `[^/]`, `.` a literal dot; the rule must match the whole relative path; later lines take
//!   precedence; an entry no rule matches inherits its directory's verdict; `.git` and a few other VCS
//!   names at the root are always left out. [`AcrIgnore`] follows it.
//!
//! No well-kept Rust crate implements Docker's semantics (the `ignore` crate is gitignore's, whose
//! unanchored patterns differ), so both are written here, from the two sources above.

use std::path::Path;
use std::process::Command;

use regex::Regex;

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir`: everything up to the last `/`, cleaned; `.` when there is none.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(slash) => clean(&path[..=slash]),
        None => ".".to_owned(),
    }
}

/// How `patternmatcher` tests one pattern against a path.
enum Test {
    Exact,
    Prefix,
    Suffix,
    Regex(Regex),
}

struct DockerPattern {
    cleaned: String,
    exclusion: bool,
    test: Test,
}

impl DockerPattern {
    fn new(pattern: &str) -> Self {
        let pattern = clean(pattern.trim());
        let (exclusion, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest.to_owned()),
            None => (false, pattern),
        };
        let test = compile(&pattern);
        Self {
            cleaned: pattern,
            exclusion,
            test,
        }
    }

    fn matches(&self, path: &str) -> bool {
        match &self.test {
            Test::Exact => path == self.cleaned,
            Test::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Test::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            Test::Regex(regex) => regex.is_match(path),
        }
    }
}

/// `Pattern.compile`: the regular expression, and which cheaper test stands in for it.
fn compile(pattern: &str) -> Test {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut pos = 0;
    let mut first = true;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(ch);
            }
            '\\' => match chars.get(pos) {
                Some(&next) => {
                    regex.push('\\');
                    regex.push(next);
                    pos += 1;
                    kind = Kind::Regex;
                }
                None => regex.push_str("\\\\"),
            },
            '[' | ']' => {
                regex.push(ch);
                kind = Kind::Regex;
            }
            other => regex.push(other),
        }
        first = false;
    }
    match kind {
        Kind::Exact => Test::Exact,
        Kind::Prefix => Test::Prefix,
        Kind::Suffix => Test::Suffix,
        Kind::Regex => {
            regex.push('$');
            Test::Regex(Regex::new(&regex).expect("a pattern Docker accepts"))
        }
    }
}

/// One program's reading of `.dockerignore`.
trait Matcher {
    /// Is this file (relative to the context root, `/`-separated) left out of the upload?
    fn excludes(&self, file: &str) -> bool;
}

/// `.dockerignore` as `docker build` applies it.
struct DockerIgnore(Vec<DockerPattern>);

impl DockerIgnore {
    /// `ignorefile.ReadAll`, then `patternmatcher.New`.
    fn parse(text: &str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, line) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let mut pattern = if line.is_empty() {
                String::new()
            } else {
                clean(line)
            };
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
            if invert {
                pattern.insert(0, '!');
            }
            patterns.push(DockerPattern::new(&pattern));
        }
        Self(patterns)
    }
}

impl Matcher for DockerIgnore {
    /// `MatchesOrParentMatches`.
    fn excludes(&self, file: &str) -> bool {
        let parent = go_dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.0 {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(file);
            if !hit && parent != "." {
                hit = (1..=parent_dirs.len()).any(|i| pattern.matches(&parent_dirs[..i].join("/")));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

/// `.dockerignore` as `az acr build` applies it.
struct AcrIgnore {
    /// Highest priority (last line) first, as the CLI orders them.
    rules: Vec<(Regex, bool)>,
}

impl AcrIgnore {
    fn parse(text: &str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for line in text.lines() {
            let rule = line.trim_end();
            if rule.is_empty() || rule.starts_with('#') {
                continue;
            }
            let (ignore, rule) = match rule.strip_prefix('!') {
                Some(rest) => (false, rest),
                None => (true, rule),
            };
            let tokens: Vec<&str> = rule.split('/').collect();
            let mut regex = String::from("^");
            for (index, token) in tokens.iter().enumerate() {
                if *token == "**" {
                    regex.push_str(".*");
                } else {
                    regex.push_str(
                        &token
                            .replace('*', "[^/]*")
                            .replace('?', "[^/]")
                            .replace('.', "\\."),
                    );
                    if index + 1 < tokens.len() {
                        regex.push('/');
                    }
                }
            }
            regex.push('$');
            rules.insert(0, (Regex::new(&regex).unwrap(), ignore));
        }
        Self { rules }
    }
}

impl Matcher for AcrIgnore {
    /// `_archive_file_recursively` with `_ignore_check`, walked down to this file.
    fn excludes(&self, file: &str) -> bool {
        const VCS: &[&str] = &[
            ".git",
            ".gitignore",
            ".bzr",
            "bzrignore",
            ".hg",
            ".hgignore",
            ".svn",
        ];
        let mut ignored = false;
        let mut rule_index = self.rules.len();
        let parts: Vec<&str> = file.split('/').collect();
        for depth in 1..=parts.len() {
            let name = parts[..depth].join("/");
            if VCS.contains(&name.as_str()) {
                ignored = true;
                continue;
            }
            if let Some((index, (_, ignore))) = self
                .rules
                .iter()
                .enumerate()
                .take(rule_index)
                .find(|(_, (regex, _))| regex.is_match(&name))
            {
                ignored = *ignore;
                rule_index = index;
            }
        }
        ignored
    }
}

/// Files in the repository (tracked, and untracked but not git-ignored).
fn repository_files() -> Vec<String> {
    let output = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .current_dir(workspace())
        .output()
        .expect("git is needed to list the repository's files");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a participant's checkout holds besides the repository's files after labs ran: the state
/// directory (Terraform's state, backups, plan and data directory), a state an older lab left in
/// terraform/, virtualenvs, build output, and state or plans a participant made by hand elsewhere.
const LAB_LEFTOVERS: &[&str] = &[
    ".lab/azure/terraform/terraform.tfstate",
    ".lab/azure/terraform/terraform.tfstate.backup",
    ".lab/azure/terraform/tfplan",
    ".lab/azure/terraform/.terraform/terraform.tfstate",
    ".lab/azure/last-send.json",
    ".lab/lab.json",
    "terraform/terraform.tfstate",
    "terraform/terraform.tfstate.backup",
    "terraform/terraform.tfstate.1764600000.backup",
    "terraform/tfplan",
    "terraform/.terraform/terraform.tfstate",
    "terraform/.terraform/providers/registry.terraform.io/hashicorp/azurerm/5.2.0/linux_amd64/terraform-provider-azurerm",
    "terraform/.terraform.lock.hcl",
    "lab/terraform.tfstate",
    "lab/my-copy/terraform/terraform.tfstate.backup",
    "lab/my-copy/terraform/tfplan",
    "lab/my-copy/terraform/plan.tfplan",
    "lab/my-copy/terraform/.terraform/terraform.tfstate",
    ".venv/bin/python",
    "tests/.venv/lib/python3.13/site-packages/azure/servicebus/__init__.py",
    "target/debug/xtask",
    "target/release/servicebus-job",
    ".git/config",
    ".env",
    "emulator/.env",
];

/// Must never be uploaded: the test's reason for being.
fn is_secret_or_local(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.split('/')
        .any(|part| matches!(part, ".lab" | ".venv" | "target" | ".terraform" | ".git"))
        || name.ends_with(".tfstate")
        || name.contains(".tfstate.")
        || name == "tfplan"
        || name.ends_with(".tfplan")
        || name == ".env"
}

#[test]
fn the_build_context_holds_no_state_plan_or_local_environment() {
    let dockerignore = std::fs::read_to_string(workspace().join(".dockerignore")).unwrap();
    let docker = DockerIgnore::parse(&dockerignore);
    let acr = AcrIgnore::parse(&dockerignore);
    let mut files = repository_files();
    files.extend(LAB_LEFTOVERS.iter().map(|f| (*f).to_owned()));

    let matchers: [(&str, &dyn Matcher); 2] = [("docker build", &docker), ("az acr build", &acr)];
    for (tool, matcher) in matchers {
        let uploaded: Vec<&String> = files.iter().filter(|f| !matcher.excludes(f)).collect();
        let leaked: Vec<&&String> = uploaded.iter().filter(|f| is_secret_or_local(f)).collect();
        assert!(
            leaked.is_empty(),
            "`{tool}` would upload these with the repository's .dockerignore: {leaked:#?}"
        );
        // …and still everything the Dockerfile builds from.
        for needed in [
            "Dockerfile",
            "Cargo.toml",
            "Cargo.lock",
            "src/lib.rs",
            "emulator/Cargo.toml",
            "xtask/Cargo.toml",
        ] {
            assert!(
                uploaded.iter().any(|f| f.as_str() == needed),
                "`{tool}` would leave out {needed}, which the image build needs"
            );
        }
    }
}

#[test]
fn the_docker_matcher_follows_patternmatcher() {
    // moby/patternmatcher's own table (patternmatcher_test.go, TestMatches, run through
    // MatchesOrParentMatches), facts carried over case by case.
    let cases: &[(&str, &str, bool)] = &[
        (r#"**"#, r#"file"#, true),
        (r#"**"#, r#"file/"#, true),
        (r#"**/"#, r#"file"#, true),
        (r#"**/"#, r#"file/"#, true),
        (r#"**"#, r#"/"#, true),
        (r#"**/"#, r#"/"#, true),
        (r#"**"#, r#"dir/file"#, true),
        (r#"**/"#, r#"dir/file"#, true),
        (r#"**"#, r#"dir/file/"#, true),
        (r#"**/"#, r#"dir/file/"#, true),
        (r#"**/**"#, r#"dir/file"#, true),
        (r#"**/**"#, r#"dir/file/"#, true),
        (r#"dir/**"#, r#"dir/file"#, true),
        (r#"dir/**"#, r#"dir/file/"#, true),
        (r#"dir/**"#, r#"dir/dir2/file"#, true),
        (r#"dir/**"#, r#"dir/dir2/file/"#, true),
        (r#"**/dir"#, r#"dir"#, true),
        (r#"**/dir"#, r#"dir/file"#, true),
        (r#"**/dir2/*"#, r#"dir/dir2/file"#, true),
        (r#"**/dir2/*"#, r#"dir/dir2/file/"#, true),
        (r#"**/dir2/**"#, r#"dir/dir2/dir3/file"#, true),
        (r#"**/dir2/**"#, r#"dir/dir2/dir3/file/"#, true),
        (r#"**file"#, r#"file"#, true),
        (r#"**file"#, r#"dir/file"#, true),
        (r#"**/file"#, r#"dir/file"#, true),
        (r#"**file"#, r#"dir/dir/file"#, true),
        (r#"**/file"#, r#"dir/dir/file"#, true),
        (r#"**/file*"#, r#"dir/dir/file"#, true),
        (r#"**/file*"#, r#"dir/dir/file.txt"#, true),
        (r#"**/file*txt"#, r#"dir/dir/file.txt"#, true),
        (r#"**/file*.txt"#, r#"dir/dir/file.txt"#, true),
        (r#"**/file*.txt*"#, r#"dir/dir/file.txt"#, true),
        (r#"**/**/*.txt"#, r#"dir/dir/file.txt"#, true),
        (r#"**/**/*.txt2"#, r#"dir/dir/file.txt"#, false),
        (r#"**/*.txt"#, r#"file.txt"#, true),
        (r#"**/**/*.txt"#, r#"file.txt"#, true),
        (r#"a**/*.txt"#, r#"a/file.txt"#, true),
        (r#"a**/*.txt"#, r#"a/dir/file.txt"#, true),
        (r#"a**/*.txt"#, r#"a/dir/dir/file.txt"#, true),
        (r#"a/*.txt"#, r#"a/dir/file.txt"#, false),
        (r#"a/*.txt"#, r#"a/file.txt"#, true),
        (r#"a/*.txt**"#, r#"a/file.txt"#, true),
        (r#"a[b-d]e"#, r#"ae"#, false),
        (r#"a[b-d]e"#, r#"ace"#, true),
        (r#"a[b-d]e"#, r#"aae"#, false),
        (r#"a[^b-d]e"#, r#"aze"#, true),
        (r#".*"#, r#".foo"#, true),
        (r#".*"#, r#"foo"#, false),
        (r#"abc.def"#, r#"abcdef"#, false),
        (r#"abc.def"#, r#"abc.def"#, true),
        (r#"abc.def"#, r#"abcZdef"#, false),
        (r#"abc?def"#, r#"abcZdef"#, true),
        (r#"abc?def"#, r#"abcdef"#, false),
        (r#"a\\"#, r#"a\"#, true),
        (r#"**/foo/bar"#, r#"foo/bar"#, true),
        (r#"**/foo/bar"#, r#"dir/foo/bar"#, true),
        (r#"**/foo/bar"#, r#"dir/dir2/foo/bar"#, true),
        (r#"abc/**"#, r#"abc"#, false),
        (r#"abc/**"#, r#"abc/def"#, true),
        (r#"abc/**"#, r#"abc/def/ghi"#, true),
        (r#"**/.foo"#, r#".foo"#, true),
        (r#"**/.foo"#, r#"bar.foo"#, false),
        (r#"a(b)c/def"#, r#"a(b)c/def"#, true),
        (r#"a(b)c/def"#, r#"a(b)c/xyz"#, false),
        (r#"a.|)$(}+{bc"#, r#"a.|)$(}+{bc"#, true),
        (
            r#"dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"#,
            r#"dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"#,
            true,
        ),
        (
            r#"dist/*.whl"#,
            r#"dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"#,
            true,
        ),
        (r#"a\*b"#, r#"a*b"#, true),
        // And what this repository relies on: anchored at the root, unlike .gitignore; parents match.
        ("*.tfstate", "terraform/terraform.tfstate", false),
        ("**/*.tfstate", "terraform/terraform.tfstate", true),
        ("target/", "target/debug/x", true),
        ("/target", "target/debug/x", true),
        (
            "terraform/.terraform",
            "terraform/.terraform/providers/x",
            true,
        ),
    ];
    for (pattern, file, expected) in cases {
        // ReadAll then New, as for a file; the table has no line that ReadAll alone would change.
        let matcher = DockerIgnore::parse(pattern);
        assert_eq!(
            matcher.excludes(file),
            *expected,
            "pattern {pattern:?} on {file:?}"
        );
    }
    // The table's multi-pattern cases: the last matching pattern wins; `!` re-includes.
    let multi: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
    ];
    for (patterns, file, expected) in multi {
        let matcher = DockerIgnore(patterns.iter().map(|p| DockerPattern::new(p)).collect());
        assert_eq!(
            matcher.excludes(file),
            *expected,
            "patterns {patterns:?} on {file:?}"
        );
    }
    // Read from a file: comments, blank lines, surrounding spaces.
    let matcher = DockerIgnore::parse("docs\n!docs/README.md\n# comment\n  \n");
    assert!(matcher.excludes("docs/other.md"));
    assert!(!matcher.excludes("docs/README.md"));
    assert_eq!(clean("a//b/./c/../d/"), "a/b/d");
    assert_eq!(clean("/../x"), "/x");
}

#[test]
fn the_az_acr_build_matcher_keeps_its_own_quirks() {
    // A trailing slash excludes nothing there, the reason .dockerignore has none.
    let acr = AcrIgnore::parse("target/\n.lab\n");
    assert!(!acr.excludes("target/debug/xtask"));
    assert!(acr.excludes(".lab/azure/terraform/terraform.tfstate"));
    // `**` is `.*`: any depth, root included.
    let acr = AcrIgnore::parse("**/*.tfstate\n");
    assert!(acr.excludes("terraform.tfstate") && acr.excludes("a/b/terraform.tfstate"));
    // Later lines win; an exception can re-include inside an excluded directory.
    let acr = AcrIgnore::parse("docs\n!docs/README.md\n");
    assert!(acr.excludes("docs/other.md"));
    assert!(!acr.excludes("docs/README.md"));
    assert!(acr.excludes(".git/config"), "VCS directories never go");
}
