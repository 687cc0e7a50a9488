//! New values, from the operating system's random source (`ring::rand::SystemRandom`). A value
//! lives in a [`NewValue`], whose `Debug` and `Display` never show it.

use base64::Engine as _;
use ring::rand::SecureRandom as _;

use super::resource::{Generate, Password};

/// A generated secret value. Only [`NewValue::expose`] gives the text, to write it to the store.
pub struct NewValue(String);

impl NewValue {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A value read back from the store (a rotation resumed after a crash between targets).
    pub fn from_store(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for NewValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewValue(<{} characters>)", self.0.len())
    }
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
/// Symbols that need no quoting in a shell, a URL's userinfo or a connection string.
const SYMBOLS: &[u8] = b"-_.~!*+=^";

/// The random source failed (the OS could not give random bytes): nothing is written.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed; nothing was written")]
pub struct RandomFailed;

fn random_bytes(n: usize) -> Result<Vec<u8>, RandomFailed> {
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| RandomFailed)?;
    Ok(out)
}

/// A uniform index below `n` (n <= 256), by rejection: no modulo bias.
fn uniform_index(n: usize) -> Result<usize, RandomFailed> {
    let n_u8 = u16::try_from(n).unwrap_or(256);
    let limit = 256 - (256 % n_u8);
    loop {
        let b = u16::from(random_bytes(1)?[0]);
        if b < limit {
            return Ok(usize::from(b % n_u8));
        }
    }
}

/// A value as `generate` says (checked by `Spec::check` before).
pub fn new_value(generate: &Generate) -> Result<NewValue, RandomFailed> {
    if let Some(p) = &generate.password {
        return password(p);
    }
    let spec = generate.random_bytes.clone().unwrap_or_default();
    let bytes = random_bytes(spec.bytes.max(1))?;
    Ok(NewValue(match spec.encoding.as_str() {
        "hex" => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        _ => base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
}

/// A password of `p.length` characters with at least one of each class turned on.
fn password(p: &Password) -> Result<NewValue, RandomFailed> {
    let classes: Vec<&[u8]> = [
        (p.lowercase, LOWER),
        (p.uppercase, UPPER),
        (p.digits, DIGITS),
        (p.symbols, SYMBOLS),
    ]
    .into_iter()
    .filter_map(|(on, set)| on.then_some(set))
    .collect();
    let all: Vec<u8> = classes.iter().flat_map(|c| c.iter().copied()).collect();
    let mut chars = Vec::with_capacity(p.length);
    for class in &classes {
        chars.push(class[uniform_index(class.len())?]);
    }
    while chars.len() < p.length {
        chars.push(all[uniform_index(all.len())?]);
    }
    // Shuffle (Fisher-Yates) so the guaranteed characters are not always first.
    for i in (1..chars.len()).rev() {
        let j = uniform_index(i + 1)?;
        chars.swap(i, j);
    }
    Ok(NewValue(String::from_utf8_lossy(&chars).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::resource::RandomBytes;
    use super::*;

    #[test]
    fn passwords_have_the_length_and_every_class_asked() {
        let p = Password {
            length: 12,
            lowercase: true,
            uppercase: true,
            digits: true,
            symbols: true,
        };
        for _ in 0..200 {
            let v = password(&p).unwrap();
            let s = v.expose();
            assert_eq!(s.len(), 12);
            assert!(s.bytes().any(|b| LOWER.contains(&b)));
            assert!(s.bytes().any(|b| UPPER.contains(&b)));
            assert!(s.bytes().any(|b| DIGITS.contains(&b)));
            assert!(s.bytes().any(|b| SYMBOLS.contains(&b)));
        }
        let digits_only = Password {
            length: 30,
            lowercase: false,
            uppercase: false,
            digits: true,
            symbols: false,
        };
        assert!(
            password(&digits_only)
                .unwrap()
                .expose()
                .bytes()
                .all(|b| b.is_ascii_digit())
        );
    }

    #[test]
    fn random_bytes_are_encoded_as_asked_and_differ() {
        let hex = Generate {
            password: None,
            random_bytes: Some(RandomBytes {
                bytes: 32,
                encoding: "hex".into(),
            }),
        };
        let a = new_value(&hex).unwrap();
        let b = new_value(&hex).unwrap();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a.expose(), b.expose());
        let b64 = Generate {
            password: None,
            random_bytes: Some(RandomBytes {
                bytes: 32,
                encoding: "base64".into(),
            }),
        };
        assert_eq!(new_value(&b64).unwrap().expose().len(), 44);
    }

    #[test]
    fn a_value_never_shows_in_debug() {
        let v = NewValue("canary-never-shown".to_string());
        assert!(!format!("{v:?}").contains("canary"));
    }

    #[test]
    fn indexes_are_uniform_enough() {
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[uniform_index(10).unwrap()] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
