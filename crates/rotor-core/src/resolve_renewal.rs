//! The `>>` answers that only files render (a PKI certificate and its key, a database user and
//! password): in signal mode rotor-init issues them again before they end, renders the files
//! again from the new answer and signals the app, so short-lived credentials never restart it.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{FileSet, FileTemplate, Request};
use crate::store::{Lease, Secret, StoreClient, StoreError};

/// One `>>` request the files render, as the store is asked it again. `Display` shows its path
/// only (a body may carry parameters the logs need not hold).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileWrite(Request);

impl FileWrite {
    pub fn path(&self) -> &str {
        match &self.0 {
            Request::Read { path, .. }
            | Request::ReadAws { arn: path, .. }
            | Request::Write { path, .. } => path,
        }
    }
}

impl std::fmt::Display for FileWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, ">>{}", self.path())
    }
}

/// How long `secret` has left at `now`: a certificate's `expiration` (Unix seconds, PKI), else
/// its lease's duration; `None` when it says neither (it is not renewed).
pub fn time_left(secret: &Secret, now: SystemTime) -> Option<Duration> {
    let expiration = secret.data.get("expiration").and_then(Value::as_u64);
    if let Some(at) = expiration {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
        return Some(at.duration_since(now).unwrap_or_default());
    }
    secret
        .lease
        .as_ref()
        .map(|l| l.duration)
        .filter(|d| !d.is_zero())
}

impl FileSet {
    /// The `>>` answers only files render, each with how long it has left at `now` ([`time_left`]);
    /// answers the env renders too (it cannot change) and answers without an end are left out.
    pub fn renewable_writes(&self, now: SystemTime) -> Vec<(FileWrite, Duration)> {
        let mut out: Vec<(FileWrite, Duration)> = self
            .answers
            .iter()
            .filter(|(r, _)| matches!(r, Request::Write { .. }) && !self.env_writes.contains(r))
            .filter_map(|(r, secret)| Some((FileWrite(r.clone()), time_left(secret, now)?)))
            .collect();
        out.sort_by(|a, b| a.0.path().cmp(b.0.path()));
        out
    }

    /// The leases of [`FileSet::renewable_writes`]' answers: re-issued, never renewed.
    pub fn renewable_lease_ids(&self) -> Vec<String> {
        let now = SystemTime::now();
        self.renewable_writes(now)
            .iter()
            .filter_map(|(w, _)| self.answers.get(&w.0)?.lease.as_ref())
            .map(|l| l.id.clone())
            .collect()
    }

    /// Issues `write` again (one request) and keeps the new answer for the next render; returns
    /// the old answer's lease (to revoke once the app has moved on) and how long the new answer
    /// has left. The old answer stays when the store fails.
    pub async fn reissue(
        &mut self,
        client: &StoreClient,
        write: &FileWrite,
        now: SystemTime,
    ) -> Result<(Option<Lease>, Option<Duration>), StoreError> {
        let Request::Write { path, body } = &write.0 else {
            return Ok((None, None));
        };
        let secret = client.write(path, body.as_deref()).await?;
        let left = time_left(&secret, now);
        let old = self.answers.insert(write.0.clone(), secret);
        Ok((old.and_then(|s| s.lease), left))
    }

    /// The names of the files that render `write`'s answer.
    pub fn files_rendering(&self, write: &FileWrite) -> Vec<&str> {
        self.templates
            .iter()
            .filter(|(_, t)| match t {
                FileTemplate::References(t) => {
                    t.references().iter().any(|r| Request::of(r) == write.0)
                }
                FileTemplate::Literal(_) => false,
            })
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(data: Value, lease: Option<u64>) -> Secret {
        Secret {
            data: data.as_object().cloned().unwrap_or_default(),
            version: None,
            lease: lease.map(|d| Lease {
                id: "pki/issue/app/abc".into(),
                duration: Duration::from_secs(d),
                renewable: false,
            }),
        }
    }

    #[test]
    fn a_certificate_lives_until_its_expiration_and_a_credential_for_its_lease() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let cert = secret(
            json!({ "certificate": "PEM", "expiration": 1_090 }),
            Some(3600),
        );
        assert_eq!(
            time_left(&cert, now),
            Some(Duration::from_secs(90)),
            "the certificate's end first"
        );
        let expired = secret(json!({ "expiration": 900 }), None);
        assert_eq!(time_left(&expired, now), Some(Duration::ZERO));
        let creds = secret(json!({ "username": "u" }), Some(300));
        assert_eq!(time_left(&creds, now), Some(Duration::from_secs(300)));
        assert_eq!(time_left(&secret(json!({ "k": "v" }), None), now), None);
        assert_eq!(
            time_left(&secret(json!({}), Some(0)), now),
            None,
            "no end: not renewed"
        );
    }

    #[test]
    fn only_writes_no_env_renders_are_renewable_and_shown_by_path_only() {
        let write = |path: &str| Request::Write {
            path: path.into(),
            body: Some(r#"{"common_name":"x"}"#.into()),
        };
        let mut set = FileSet::default();
        set.answers.insert(
            write("pki/issue/app"),
            secret(json!({ "expiration": 4_000_000_000u64 }), Some(60)),
        );
        set.answers
            .insert(write("database/creds/app"), secret(json!({}), Some(60)));
        set.answers.insert(
            Request::Read {
                path: "secret/db".into(),
                version: None,
            },
            secret(json!({}), Some(60)),
        );
        set.env_writes.insert(write("database/creds/app"));
        let now = SystemTime::now();
        let renewable = set.renewable_writes(now);
        assert_eq!(renewable.len(), 1);
        assert_eq!(renewable[0].0.to_string(), ">>pki/issue/app");
        assert_eq!(set.renewable_lease_ids(), ["pki/issue/app/abc"]);
    }
}
