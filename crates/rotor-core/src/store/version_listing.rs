//! The current version of every KV v2 secret in one directory, one request per page: OpenBao's
//! `LIST <mount>/detailed-metadata/<dir>` (OpenBao 2.2 and later) with `limit` and `after`.
//! Vault has no such endpoint: there the reloader reads one metadata record per path.

use serde_json::Value;

use super::client::{MountInfo, StoreClient};
use super::error::StoreError;
use super::transport::Method;

/// The most keys one page may ask for: an entry carries its versions' times (10 by default,
/// ~1 KiB), so a page of 200 stays far below the answer cap ([`super::transport::MAX_ANSWER_BYTES`]).
pub const MAX_PAGE_KEYS: usize = 200;

/// One secret of a listed directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    /// Its name in the directory (no folder part).
    pub name: String,
    pub version: u64,
    /// When its current version was written (RFC 3339), when the store says.
    pub written: Option<String>,
}

/// One page of a directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionPage {
    pub versions: Vec<ListedVersion>,
    /// The page's last key (a secret or a `folder/`): the next page starts after it.
    pub last_key: Option<String>,
    /// The page was full, so the directory may hold more keys after `last_key`.
    pub more: bool,
}

impl StoreClient {
    /// One page of the secrets directly in `dir` (relative to `mount`, empty or ending in `/`),
    /// keys after `after` (exclusive), at most `limit` keys ([`MAX_PAGE_KEYS`] at most).
    pub async fn list_versions(
        &self,
        mount: &MountInfo,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<VersionPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE_KEYS);
        let op = format!("listing the versions under {}{dir}", mount.path);
        if mount.kv_version != Some(2) {
            return Err(StoreError::NotKv2 {
                op,
                mount: mount.path.clone(),
                fix: "only KV v2 secrets have versions to watch",
            });
        }
        let mut api_path = format!(
            "{}detailed-metadata/{dir}?list=true&limit={limit}",
            mount.path
        );
        if let Some(after) = after {
            api_path.push_str("&after=");
            api_path.push_str(&query_escape(after));
        }
        let answer = self
            .config()
            .retry
            .run(|| self.call(Method::Get, &api_path, None, &op))
            .await?;
        Ok(page_from(&answer, limit))
    }
}

/// The listing answer → the page. Keys without a readable current version (folders, or an
/// entry the store did not describe) are left out: the caller reads those per path.
fn page_from(answer: &Value, limit: usize) -> VersionPage {
    let keys: Vec<&str> = answer
        .pointer("/data/keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let info = answer.pointer("/data/key_info");
    let versions = keys
        .iter()
        .filter(|key| !key.ends_with('/'))
        .filter_map(|key| {
            let entry = info?.get(*key)?;
            let version = entry.get("current_version")?.as_u64()?;
            let written = entry
                .pointer(&format!("/versions/{version}/created_time"))
                .and_then(Value::as_str)
                .map(str::to_string);
            Some(ListedVersion {
                name: (*key).to_string(),
                version,
                written,
            })
        })
        .collect();
    VersionPage {
        versions,
        last_key: keys.last().map(|k| (*k).to_string()),
        more: keys.len() >= limit,
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_gives_each_secret_its_current_version_and_time_and_skips_folders() {
        let answer = json!({ "data": {
            "keys": ["a", "b", "sub/", "odd"],
            "key_info": {
                "a": { "current_version": 3, "versions": { "3": { "created_time": "2026-12-04T01:00:00Z" } } },
                "b": { "current_version": 1, "versions": {} },
                "odd": { "versions": {} }
            }
        }});
        let page = page_from(&answer, 4);
        assert_eq!(
            page.versions,
            vec![
                ListedVersion {
                    name: "a".into(),
                    version: 3,
                    written: Some("2026-12-04T01:00:00Z".into())
                },
                ListedVersion {
                    name: "b".into(),
                    version: 1,
                    written: None
                },
            ]
        );
        assert_eq!(page.last_key.as_deref(), Some("odd"));
        assert!(page.more, "a full page may have more after it");
        assert!(!page_from(&answer, 5).more);
        assert_eq!(page_from(&json!({}), 5), VersionPage::default());
    }

    #[test]
    fn an_after_key_is_escaped_for_the_query() {
        assert_eq!(query_escape("app-1.x_~"), "app-1.x_~");
        assert_eq!(query_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
