//! What the test app prints, shared with the tests that read its log.

/// The line the app prints for env var `name` with `value`: length, a 3-character prefix and an
/// FNV-1a digest, never the value itself.
pub fn env_line(name: &str, value: Option<&str>) -> String {
    match value {
        None => format!("app: env {name} unset"),
        Some(v) => format!(
            "app: env {name} len={} prefix={} fnv={:016x}",
            v.chars().count(),
            v.chars().take(3).collect::<String>(),
            fnv1a(v.as_bytes())
        ),
    }
}

/// The line the app prints for the file at `path` (`None`: unreadable): its length and FNV-1a
/// digest, never its content.
pub fn file_line(path: &str, content: Option<&[u8]>) -> String {
    match content {
        None => format!("app: file {path} unreadable"),
        Some(c) => format!("app: file {path} len={} fnv={:016x}", c.len(), fnv1a(c)),
    }
}

/// FNV-1a, 64 bits: a digest the tests recompute to compare values without printing them.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn env_line_never_holds_the_value() {
        let line = env_line("DB_PASSWORD", Some("s3cr3t-canary"));
        assert!(!line.contains("s3cr3t-canary"), "{line}");
        assert!(line.starts_with("app: env DB_PASSWORD len=13 prefix=s3c fnv="));
        assert_eq!(env_line("X", None), "app: env X unset");
    }
}
