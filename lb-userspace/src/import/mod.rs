//! `lbd import`: haproxy.cfg plus one keepalived.conf per node in, one
//! lbd.toml out. Pure core (`haproxy`, `keepalived` parse, `translate`
//! maps, `render` writes text), I/O only in [`command`].
//!
//! Every block written names the line it came from; whatever has no lb
//! equivalent is a [`Finding`] listed on stderr, so nothing is dropped
//! without a word. The output is parsed with lbd's own config parser before
//! it is written, and written by rename, so a file is never half there.

pub mod haproxy;
pub mod keepalived;
pub mod render;
pub mod translate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Written, and nothing was left out.
pub const EXIT_COMPLETE: u8 = 0;
/// Nothing written: an input could not be read or understood.
pub const EXIT_ERROR: u8 = 1;
/// Written, but some of the inputs were left out (listed on stderr).
pub const EXIT_INCOMPLETE: u8 = 3;

/// A line of an input file (line 0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: String,
    pub line: usize,
}

impl Pos {
    pub fn new(file: &str, line: usize) -> Pos {
        Pos {
            file: file.to_string(),
            line,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// Something that stops the import: nothing is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub at: Pos,
    pub what: String,
    pub why: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.what, self.why)
    }
}

/// Something translated with a difference (`dropped` false) or left out
/// (`dropped` true, which makes the import incomplete).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub at: Pos,
    pub what: String,
    pub why: String,
    pub dropped: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = if self.dropped { "not imported" } else { "note" };
        write!(f, "{}: {tag}: {}: {}", self.at, self.what, self.why)
    }
}

/// One input file's name (as shown in messages) and bytes.
pub struct Input<'a> {
    pub file: &'a str,
    pub bytes: &'a [u8],
}

#[derive(Debug)]
pub struct Imported {
    pub text: String,
    pub findings: Vec<Finding>,
}

impl Imported {
    pub fn complete(&self) -> bool {
        !self.findings.iter().any(|f| f.dropped)
    }
}

/// Text of an input, refusing what is not a config file.
fn text<'a>(input: &Input<'a>) -> Result<&'a str, Diagnostic> {
    let error = |line: usize, why: &str| Diagnostic {
        at: Pos::new(input.file, line),
        what: "not a text file".into(),
        why: why.into(),
    };
    let text = std::str::from_utf8(input.bytes).map_err(|e| {
        let line = input.bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        error(
            line + 1,
            "the bytes here are not UTF-8 text; is this the right file?",
        )
    })?;
    if let Some(at) = text.find('\0') {
        let line = text[..at].matches('\n').count();
        return Err(error(
            line + 1,
            "it contains a NUL byte; is this the right file?",
        ));
    }
    if text.trim().is_empty() {
        return Err(Diagnostic {
            at: Pos::new(input.file, 0),
            what: "empty file".into(),
            why: "there is nothing to import; is this the right file?".into(),
        });
    }
    Ok(text)
}

/// The whole import without I/O: inputs in, lbd.toml text and findings out.
pub fn import(
    haproxy_input: &Input,
    nodes: &[(String, Input)],
) -> Result<Imported, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    if nodes.is_empty() {
        errors.push(Diagnostic {
            at: Pos::new(haproxy_input.file, 0),
            what: "no keepalived.conf".into(),
            why: "name one per node: --keepalived NODE=keepalived.conf".into(),
        });
    }
    for (index, (node, input)) in nodes.iter().enumerate() {
        let valid = !node.is_empty()
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            errors.push(Diagnostic {
                at: Pos::new(input.file, 0),
                what: format!("node name `{node}`"),
                why: "use letters, digits, - and _ (it becomes [node.NAME])".into(),
            });
        }
        if nodes[..index].iter().any(|(n, _)| n == node) {
            errors.push(Diagnostic {
                at: Pos::new(input.file, 0),
                what: format!("node `{node}`"),
                why: "named twice on the command line; give each node its own file".into(),
            });
        }
    }
    let ha = text(haproxy_input)
        .map_err(|e| vec![e])
        .and_then(|t| haproxy::parse(t, haproxy_input.file));
    let mut keepalived = Vec::new();
    for (node, input) in nodes {
        match text(input)
            .map_err(|e| vec![e])
            .and_then(|t| keepalived::parse(t, input.file))
        {
            Ok(conf) => keepalived.push((node.clone(), conf)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let ha = match ha {
        Ok(ha) => ha,
        Err(mut e) => {
            errors.append(&mut e);
            return Err(errors);
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let translation = translate::translate(&ha, &keepalived)?;
    let mut sources = vec![haproxy_input.file.to_string()];
    sources.extend(nodes.iter().map(|(n, i)| format!("{} ({n})", i.file)));
    let text = render::render(&translation.lbd, &sources);
    if let Err(invalid) = crate::config::parse(&text, "lbd.toml (generated)") {
        // A bug or a combination the translation did not foresee: say so and
        // write nothing.
        return Err(invalid
            .0
            .iter()
            .map(|e| Diagnostic {
                at: Pos::new("lbd.toml (generated)", e.line),
                what: e.key.clone(),
                why: format!(
                    "the generated config does not pass lbd's checks: {}",
                    e.message
                ),
            })
            .collect());
    }
    Ok(Imported {
        text,
        findings: translation.findings,
    })
}

/// `NODE=FILE` of `--keepalived`.
pub fn node_file(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((node, file)) if !node.is_empty() && !file.is_empty() => {
            Ok((node.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "`{arg}`: write NODE=FILE, e.g. lb1=/etc/keepalived/keepalived.conf"
        )),
    }
}

/// `lbd import`: reads the files, writes `output` (or stdout), lists the
/// findings on stderr.
pub fn command(
    haproxy: &Path,
    keepalived: &[(String, PathBuf)],
    output: Option<&Path>,
) -> ExitCode {
    let read = |path: &Path| -> Result<Vec<u8>, Diagnostic> {
        std::fs::read(path).map_err(|e| Diagnostic {
            at: Pos::new(&path.display().to_string(), 0),
            what: "cannot read the file".into(),
            why: e.to_string(),
        })
    };
    let mut errors = Vec::new();
    let haproxy_name = haproxy.display().to_string();
    let haproxy_bytes = read(haproxy).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let mut node_bytes = Vec::new();
    for (node, path) in keepalived {
        match read(path) {
            Ok(bytes) => node_bytes.push((node.clone(), path.display().to_string(), bytes)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return fail(&errors);
    }
    let nodes: Vec<(String, Input)> = node_bytes
        .iter()
        .map(|(node, file, bytes)| (node.clone(), Input { file, bytes }))
        .collect();
    let imported = match import(
        &Input {
            file: &haproxy_name,
            bytes: &haproxy_bytes,
        },
        &nodes,
    ) {
        Ok(imported) => imported,
        Err(errors) => return fail(&errors),
    };
    for finding in &imported.findings {
        eprintln!("{finding}");
    }
    match output {
        None => print!("{}", imported.text),
        Some(path) => {
            if let Err(e) = write_atomically(path, &imported.text) {
                eprintln!("lbd import: cannot write {}: {e:#}", path.display());
                return ExitCode::from(EXIT_ERROR);
            }
        }
    }
    let dropped = imported.findings.iter().filter(|f| f.dropped).count();
    if dropped == 0 {
        eprintln!("lbd import: complete");
        ExitCode::from(EXIT_COMPLETE)
    } else {
        eprintln!(
            "lbd import: written, but {dropped} item(s) above were not imported; review them, \
             then run `lbd check`"
        );
        ExitCode::from(EXIT_INCOMPLETE)
    }
}

fn fail(errors: &[Diagnostic]) -> ExitCode {
    for error in errors {
        eprintln!("{error}");
    }
    eprintln!("lbd import: nothing written");
    ExitCode::from(EXIT_ERROR)
}

/// A temporary file beside the target, renamed over it once complete.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("the output path names no file"))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        anyhow::Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
