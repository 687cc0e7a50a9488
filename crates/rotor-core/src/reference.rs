//! The reference grammar, shared by rotor-webhook, rotor-init and rotor-reloader.
//!
//! ```text
//! vault:PATH#KEY            read KEY of the secret at PATH (bao: means the same)
//! vault:PATH#KEY#VERSION    read a pinned KV v2 version
//! >>vault:PATH#KEY          write (an empty body) to PATH, read KEY of the answer
//! >>vault:PATH#KEY#{json}   write the JSON body to PATH, read KEY of the answer
//! text ${vault:PATH#KEY} text   inline, several per value, the text around kept
//! arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[#KEY[#PIN]]   AWS (see aws_reference)
//! arn:aws:ssm:REGION:ACCOUNT:parameter/NAME[#KEY[#PIN]]
//! ```
//!
//! As in Bank-Vaults' vault-env, a value is a whole reference only when it *starts* with the
//! prefix, and inline references are only `${vault:...}` / `${bao:...}` / `${>>vault:...}`:
//! `http://vault:8200`, a lone `$` or `${HOME}` are plain text and left alone.

use std::fmt;

/// Which prefix a reference was written with. Both mean the same; the spelling is kept so a
/// reference prints back as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Vault,
    Bao,
    /// An AWS Secrets Manager or SSM parameter ARN: the path is the whole ARN.
    Aws,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Self::Vault => "vault:",
            Self::Bao => "bao:",
            Self::Aws => "",
        }
    }

    /// The store family a reference is read from.
    pub fn is_aws(self) -> bool {
        self == Self::Aws
    }
}

/// One reference to a key of a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub scheme: Scheme,
    /// The store path as written (KV v2 paths may or may not contain `/data/`); for AWS the ARN.
    pub path: String,
    /// The key to read; for AWS, empty means the whole value.
    pub key: String,
    pub action: Action,
}

/// What to do at the path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read the current version (`version: None`) or a pinned one.
    Read { version: Option<u64> },
    /// Read a version named by a label (AWS: a Secrets Manager version stage or version id, an
    /// SSM parameter label). Pinned, like a version.
    ReadLabel { label: String },
    /// Write `body` (a JSON object, `None` for an empty body) and read the answer.
    Write { body: Option<String> },
}

impl Reference {
    /// The pinned version, for reads that pin one.
    pub fn pinned_version(&self) -> Option<u64> {
        match self.action {
            Action::Read { version } => version,
            Action::ReadLabel { .. } | Action::Write { .. } => None,
        }
    }

    /// Pinned to a version or a label: never changes, so never watched.
    pub fn is_pinned(&self) -> bool {
        self.pinned_version().is_some() || matches!(self.action, Action::ReadLabel { .. })
    }

    pub fn is_write(&self) -> bool {
        matches!(self.action, Action::Write { .. })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_write() {
            f.write_str(">>")?;
        }
        write!(f, "{}{}", self.scheme.prefix(), self.path)?;
        let pinned = !matches!(
            self.action,
            Action::Read { version: None } | Action::Write { body: None }
        );
        if !self.key.is_empty() || pinned {
            write!(f, "#{}", self.key)?;
        }
        match &self.action {
            Action::Read { version: Some(v) } => write!(f, "#{v}"),
            Action::ReadLabel { label } => write!(f, "#{label}"),
            Action::Write { body: Some(body) } => write!(f, "#{body}"),
            _ => Ok(()),
        }
    }
}

/// A value with references: a whole reference, or text with inline `${...}` references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Template {
    Whole(Reference),
    Inline(Vec<Segment>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Reference(Reference),
}

impl Template {
    /// Every reference in the value, in order.
    pub fn references(&self) -> Vec<&Reference> {
        match self {
            Self::Whole(r) => vec![r],
            Self::Inline(segments) => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Reference(r) => Some(r),
                    Segment::Text(_) => None,
                })
                .collect(),
        }
    }

    /// The value with each reference replaced by `resolve(reference)`.
    pub fn render<E>(
        &self,
        mut resolve: impl FnMut(&Reference) -> Result<String, E>,
    ) -> Result<String, E> {
        match self {
            Self::Whole(r) => resolve(r),
            Self::Inline(segments) => {
                let mut out = String::new();
                for segment in segments {
                    match segment {
                        Segment::Text(t) => out.push_str(t),
                        Segment::Reference(r) => out.push_str(&resolve(r)?),
                    }
                }
                Ok(out)
            }
        }
    }

    /// [`Template::render`], stopped as soon as the output would pass `max` bytes (then
    /// `Err(Err(bytes it would have))`; a reference that does not resolve is `Err(Ok(e))`):
    /// a template that repeats a large value many times never grows past the limit in memory.
    pub fn render_within<E>(
        &self,
        max: usize,
        mut resolve: impl FnMut(&Reference) -> Result<String, E>,
    ) -> Result<String, Result<E, usize>> {
        let mut out = String::new();
        let whole;
        let segments: &[Segment] = match self {
            Self::Whole(r) => {
                whole = [Segment::Reference(r.clone())];
                &whole
            }
            Self::Inline(segments) => segments,
        };
        for segment in segments {
            let resolved;
            let piece = match segment {
                Segment::Text(t) => t.as_str(),
                Segment::Reference(r) => {
                    resolved = resolve(r).map_err(Ok)?;
                    resolved.as_str()
                }
            };
            if out.len() + piece.len() > max {
                return Err(Err(out.len() + piece.len()));
            }
            out.push_str(piece);
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Whole(r) => write!(f, "{r}"),
            Self::Inline(segments) => {
                for segment in segments {
                    match segment {
                        Segment::Text(t) => f.write_str(t)?,
                        Segment::Reference(r) => write!(f, "${{{r}}}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// A reference that could not be parsed. The message names the env var, quotes the reference,
/// and says what is wrong and what is expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("env {var}: reference {reference:?}: {problem}; expected {expected}")]
pub struct ParseError {
    pub var: String,
    pub reference: String,
    pub problem: String,
    pub expected: &'static str,
}

const EXPECTED_REFERENCE: &str =
    "vault:PATH#KEY, vault:PATH#KEY#VERSION or >>vault:PATH#KEY[#{json body}] (bao: works alike)";
const EXPECTED_AWS_REFERENCE: &str = "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[#KEY[#STAGE-OR-VERSION-ID]] or arn:aws:ssm:REGION:ACCOUNT:parameter/NAME[#KEY[#VERSION-OR-LABEL]] (KEY empty for the whole value)";

/// At most this many bytes in a value that holds references (the kernel's limit on one
/// environment string is 128 KiB; a longer value could never reach the app).
pub const MAX_VALUE_BYTES: usize = 128 * 1024;
/// At most this many references in one value.
pub const MAX_REFERENCES_PER_VALUE: usize = 64;
/// At most this many characters of a reference are quoted back in an error.
const QUOTE_CHARS: usize = 120;

const INLINE_PREFIXES: [&str; 7] = [
    "vault:",
    "bao:",
    ">>vault:",
    ">>bao:",
    "arn:aws:",
    "arn:aws-cn:",
    "arn:aws-us-gov:",
];

/// Whether `value` is something rotor treats as a reference (whole or inline); cheap, linear,
/// no allocation. A value is a *whole* reference attempt only when it has the shape of one: it
/// starts with `vault:`, `bao:` (or `>>` and one of them), and the path up to the first `#` is
/// non-empty, has no whitespace, and holds a `/` or is followed by `#KEY`. So
/// `vault:1.13.3` (an image tag) and `vault: a word` are plain text. Inline references are
/// `${vault:...}` (and the other three prefixes) anywhere in the value.
///
/// The same rule is the chart's CEL prefilter (`rotor.hasReference`); the table of cases in
/// `testdata/reference_shapes.tsv` is checked against both.
pub fn has_reference(value: &str) -> bool {
    whole_attempt(value).is_some()
        || crate::aws_reference::aws_attempt(value)
        || next_inline_start(value, 0).is_some()
}

/// The scheme, write flag and text after the prefix when `value` is a whole reference attempt.
fn whole_attempt(value: &str) -> Option<(Scheme, bool, &str)> {
    let found @ (_, _, rest) = starts_with_reference(value)?;
    let head_end = rest.find('#').unwrap_or(rest.len());
    let head = &rest[..head_end];
    let shaped = !head.is_empty()
        && !head.chars().any(|c| c.is_whitespace() || c.is_control())
        && (head.contains('/') || head_end < rest.len());
    shaped.then_some(found)
}

fn starts_with_reference(value: &str) -> Option<(Scheme, bool, &str)> {
    let (write, rest) = match value.strip_prefix(">>") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if let Some(rest) = rest.strip_prefix("vault:") {
        Some((Scheme::Vault, write, rest))
    } else {
        rest.strip_prefix("bao:")
            .map(|rest| (Scheme::Bao, write, rest))
    }
}

/// The byte index of the next `${` at or after `from` that opens an inline reference.
/// Each `${` is looked at once, so scanning a whole value is linear in its length.
fn next_inline_start(value: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = value.get(at..)?.find("${") {
        let start = at + offset;
        let after = &value[start + 2..];
        if INLINE_PREFIXES.iter().any(|p| after.starts_with(p)) {
            return Some(start);
        }
        at = start + 2;
    }
    None
}

/// `text` cut to a length an error message can carry.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Parses the value of env var `var`. `Ok(None)`: no references, leave the value alone.
/// Linear in the length of `value`; values over [`MAX_VALUE_BYTES`] or with more than
/// [`MAX_REFERENCES_PER_VALUE`] references are refused.
pub fn parse_value(var: &str, value: &str) -> Result<Option<Template>, ParseError> {
    if !has_reference(value) {
        return Ok(None);
    }
    let too_much = |problem: String| ParseError {
        var: var.to_string(),
        reference: quoted(value),
        problem,
        expected: "a value of at most 128 KiB with at most 64 references; split it over several variables",
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(too_much(format!(
            "the value is {} bytes, over the limit of {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    if whole_attempt(value).is_some() || crate::aws_reference::aws_attempt(value) {
        return parse_reference(var, value).map(|r| Some(Template::Whole(r)));
    }
    let mut segments = Vec::new();
    let mut references = 0usize;
    let mut done = 0usize;
    while let Some(start) = next_inline_start(value, done) {
        references += 1;
        if references > MAX_REFERENCES_PER_VALUE {
            return Err(too_much(format!(
                "it holds more than {MAX_REFERENCES_PER_VALUE} references"
            )));
        }
        if start > done {
            segments.push(Segment::Text(value[done..start].to_string()));
        }
        let inner_start = start + 2;
        // A write body is JSON and may contain braces: take the closing brace that balances.
        // Without one the value is refused at once, so no byte is scanned twice.
        let Some(len) = balanced_end(&value[inner_start..]) else {
            return Err(ParseError {
                var: var.to_string(),
                reference: quoted(&value[start..]),
                problem: "an inline reference is not closed with '}'".to_string(),
                expected: "${vault:PATH#KEY} inside the value",
            });
        };
        let inner = &value[inner_start..inner_start + len];
        segments.push(Segment::Reference(parse_reference(var, inner)?));
        done = inner_start + len + 1;
    }
    if done < value.len() {
        segments.push(Segment::Text(value[done..].to_string()));
    }
    Ok(Some(Template::Inline(segments)))
}

/// The index of the `}` that closes an inline reference whose body may hold a JSON object.
fn balanced_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if depth > 0 => in_string = true,
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The one path rule, for every reference and from-path entry (so rotor-init, the webhook and
/// the reloader's tenancy judge the same text): a path has one normal form, its text. Anything an
/// HTTP client or the store would decode or normalise into another path is refused here, before
/// any allowlist or tenancy check: percent-encoding (`%2e%2e` is `..`), a query or fragment
/// marker, a backslash, and empty, `.` or `..` segments. `None` when the path is fine.
pub fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("the path is empty".to_string());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("the path contains whitespace".to_string());
    }
    if let Some(c) = path.chars().find(|c| matches!(c, '%' | '?' | '\\')) {
        return Some(format!(
            "the path contains {c:?}, which a client or the store would decode or normalise into \
             another path; write the path as the store names it, without percent-encoding, '?' or '\\'"
        ));
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some("the path has an empty, '.' or '..' segment".to_string());
    }
    None
}

/// Parses one AWS reference: `ARN[#KEY[#PIN]]`.
fn parse_aws_reference(var: &str, text: &str) -> Result<Reference, ParseError> {
    let fail = |problem: String| ParseError {
        var: var.to_string(),
        reference: quoted(text),
        problem,
        expected: EXPECTED_AWS_REFERENCE,
    };
    let (arn, selector) = match text.split_once('#') {
        Some((arn, selector)) => (arn, Some(selector)),
        None => (text, None),
    };
    crate::aws_reference::parse_arn(arn).map_err(fail)?;
    let (key, pin) = match selector {
        None => ("", None),
        Some(selector) => match selector.split_once('#') {
            Some((key, pin)) => (key, Some(pin)),
            None if selector.is_empty() => {
                return Err(fail(
                    "the key after '#' is empty; drop the '#' to read the whole value".to_string(),
                ));
            }
            None => (selector, None),
        },
    };
    if key.chars().any(char::is_control) {
        return Err(fail("the key contains control characters".to_string()));
    }
    let action = match pin {
        None => Action::Read { version: None },
        Some(pin) => {
            if let Some(problem) = crate::aws_reference::pin_problem(pin) {
                return Err(fail(problem));
            }
            match pin.parse::<u64>() {
                Ok(n) if n > 0 && arn.contains(":ssm:") => Action::Read { version: Some(n) },
                _ => Action::ReadLabel {
                    label: pin.to_string(),
                },
            }
        }
    };
    Ok(Reference {
        scheme: Scheme::Aws,
        path: arn.to_string(),
        key: key.to_string(),
        action,
    })
}

/// Parses one reference (`vault:...`, `bao:...`, `>>vault:...`, `arn:aws:...`).
pub fn parse_reference(var: &str, text: &str) -> Result<Reference, ParseError> {
    if crate::aws_reference::aws_attempt(text) {
        return parse_aws_reference(var, text);
    }
    let fail = |problem: String| ParseError {
        var: var.to_string(),
        reference: quoted(text),
        problem,
        expected: EXPECTED_REFERENCE,
    };
    let Some((scheme, write, rest)) = starts_with_reference(text) else {
        return Err(fail("it does not start with vault: or bao:".to_string()));
    };
    let (path, after_path) = rest
        .split_once('#')
        .ok_or_else(|| fail("the '#KEY' part is missing".to_string()))?;
    let path = path.trim_matches('/');
    if let Some(problem) = path_problem(path) {
        return Err(fail(problem));
    }
    let (key, extra) = match after_path.split_once('#') {
        Some((key, extra)) => (key, Some(extra)),
        None => (after_path, None),
    };
    if key.is_empty() {
        return Err(fail("the key after '#' is empty".to_string()));
    }
    if key.chars().any(char::is_control) {
        return Err(fail("the key contains control characters".to_string()));
    }
    let action = if write {
        let body = match extra {
            None => None,
            Some(body) => {
                match serde_json::from_str::<serde_json::Value>(body) {
                    Ok(serde_json::Value::Object(_)) => {}
                    _ => {
                        return Err(fail(
                            "the write body after the second '#' is not a JSON object".to_string(),
                        ));
                    }
                }
                Some(body.to_string())
            }
        };
        Action::Write { body }
    } else {
        let version = match extra {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(fail(format!(
                        "the version {v:?} after the second '#' is not a positive integer"
                    )));
                }
            },
        };
        Action::Read { version }
    };
    Ok(Reference {
        scheme,
        path: path.to_string(),
        key: key.to_string(),
        action,
    })
}

/// One entry of a from-path list: every key of the secret becomes an env var.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathRef {
    pub path: String,
    pub version: Option<u64>,
}

impl fmt::Display for PathRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        match self.version {
            Some(v) => write!(f, "#{v}"),
            None => Ok(()),
        }
    }
}

/// Parses a from-path list `PATH[#VERSION],...` (the `from-path` annotation).
pub fn parse_from_path(source: &str, list: &str) -> Result<Vec<PathRef>, ParseError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let fail = |problem: String| ParseError {
            var: source.to_string(),
            reference: item.to_string(),
            problem,
            expected: "a comma-separated list of PATH or PATH#VERSION",
        };
        if crate::aws_reference::aws_attempt(item) {
            return Err(fail(
                "from-path reads Vault/OpenBao paths; reference AWS secrets one by one (env NAME: ARN#KEY)"
                    .to_string(),
            ));
        }
        let item_path = item
            .strip_prefix("vault:")
            .or_else(|| item.strip_prefix("bao:"))
            .unwrap_or(item);
        let (path, version) = match item_path.split_once('#') {
            None => (item_path, None),
            Some((path, v)) => match v.parse::<u64>() {
                Ok(n) if n > 0 => (path, Some(n)),
                _ => return Err(fail(format!("the version {v:?} is not a positive integer"))),
            },
        };
        let path = path.trim_matches('/');
        if let Some(problem) = path_problem(path) {
            return Err(fail(problem));
        }
        out.push(PathRef {
            path: path.to_string(),
            version,
        });
    }
    Ok(out)
}

/// What rotor does with a value, as the table of shapes states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Whole,
    Inline,
    Plain,
    Refused,
}

/// The table of reference shapes (`testdata/reference_shapes.tsv`) that every program is tested
/// against: `(value, shape)`.
pub fn shape_cases() -> Vec<(&'static str, Shape)> {
    include_str!("../testdata/reference_shapes.tsv")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (value, shape) = l.rsplit_once('\t')?;
            let shape = match shape {
                "whole" => Shape::Whole,
                "inline" => Shape::Inline,
                "plain" => Shape::Plain,
                "refused" => Shape::Refused,
                _ => return None,
            };
            Some((value, shape))
        })
        .collect()
}

#[cfg(test)]
#[path = "reference_tests.rs"]
mod tests;
