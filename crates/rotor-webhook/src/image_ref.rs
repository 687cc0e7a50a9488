//! Container image references (`nginx`, `ghcr.io/org/app:1.2`, `127.0.0.1:5000/app@sha256:…`),
//! parsed the way the container runtime reads them. Pure.

use std::fmt;

use crate::registry_error::RegistryError;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry as written, `docker.io` when none is.
    pub registry: String,
    /// `library/nginx` for Docker Hub's single-name images.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<Self, RegistryError> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(RegistryError::BadImage(format!(
                "{image:?} is not an image reference"
            )));
        }
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) if d.contains(':') && !d.is_empty() => (n, Some(d.to_string())),
            Some(_) => {
                return Err(RegistryError::BadImage(format!(
                    "{image:?}: the digest after '@' must look like sha256:…"
                )));
            }
            None => (image, None),
        };
        // A tag is after the last ':' that follows the last '/' (a port is before a '/').
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if tag.as_deref() == Some("") || name.is_empty() {
            return Err(RegistryError::BadImage(format!(
                "{image:?} is not an image reference"
            )));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(RegistryError::BadImage(format!(
                "{image:?} has an empty repository path segment"
            )));
        }
        Ok(Self {
            registry,
            repository,
            tag: if digest.is_none() && tag.is_none() {
                Some("latest".to_string())
            } else {
                tag
            },
            digest,
        })
    }

    /// The host the registry API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The manifest reference: the digest when pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `:latest` (or no tag) without a digest: its content is expected to change.
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref() == Some("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_runtime() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/nginx", Some("latest"))
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(r.is_latest());
        let r = ImageRef::parse("ghcr.io/org/app:1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference()),
            ("ghcr.io", "org/app", "1.2")
        );
        let r = ImageRef::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference()),
            ("127.0.0.1:5000", "team/app", "latest")
        );
        let r = ImageRef::parse("localhost/app:v1@sha256:abc").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.reference(), r.is_latest()),
            ("localhost", "sha256:abc", false)
        );
        let r = ImageRef::parse("org/app:v2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "org/app")
        );
    }

    #[test]
    fn rejects_what_is_not_an_image() {
        for bad in ["", " ", "app:", "app@nodigest", "a b", "host.io//x"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
