//! The reloader's poll against a real OpenBao: versions read by listing a directory
//! (`detailed-metadata`, one request per page of 200 keys) where that takes fewer requests than
//! one metadata read per path, counted from the store's own audit log; the same versions as
//! per-path reads; and a token without `list` falls back to per-path reads, once refused.
//! Run: cargo test -p rotor-e2e --test store_version_listing
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use rotor_core::store::{Auth, StoreClient, StoreConfig};
use rotor_reloader::backoff::Remembered;
use rotor_reloader::listing::Listings;
use rotor_reloader::poll::{PollResult, Poller};
use rotor_testkit::{BaoAdmin, OpenBao, ROOT_TOKEN};
use serde_json::json;

/// Store requests on `mount`'s metadata (listings and per-path reads) since `from`.
fn metadata_requests(bao: &OpenBao, from: usize) -> Result<(usize, usize)> {
    let audited = bao.audited_requests()?;
    let since = audited.get(from..).unwrap_or_default();
    let listings = since
        .iter()
        .filter(|r| r.path.starts_with("secret/detailed-metadata/"))
        .count();
    let reads = since
        .iter()
        .filter(|r| r.path.starts_with("secret/metadata/"))
        .count();
    Ok((listings, reads))
}

async fn client(addr: &str, token: &str) -> Result<StoreClient> {
    let mut client = StoreClient::new(StoreConfig::new(addr))?;
    client.login(&Auth::Token(token.to_string())).await?;
    Ok(client)
}

struct Polling {
    poller: Poller,
    lookups: Remembered<rotor_core::store::StoreError>,
    listings: Listings,
    order: rotor_reloader::poll::ReadOrder,
}

impl Polling {
    fn new() -> Self {
        Self {
            poller: Poller::new(8, 0),
            lookups: Remembered::default(),
            listings: Listings::default(),
            order: Default::default(),
        }
    }

    async fn poll(&mut self, client: &StoreClient, paths: &BTreeSet<String>) -> PollResult {
        self.poller
            .poll_versions(
                client,
                paths,
                &mut self.lookups,
                &mut self.listings,
                &mut self.order,
            )
            .await
    }
}

/// Each path's version read one by one (the reference the listing must agree with).
async fn per_path(client: &StoreClient, paths: &BTreeSet<String>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in paths {
        if let Ok(v) = client.current_version(p).await {
            out.insert(p.clone(), v);
        }
    }
    out
}

async fn put_many(admin: &BaoAdmin, dir: &str, count: usize) -> Result<()> {
    for i in 0..count {
        admin
            .put_kv2("secret", &format!("{dir}/k{i:03}"), json!({ "v": "x" }))
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_directory_of_watched_secrets_costs_one_request_per_page_and_agrees_with_per_path_reads()
-> Result<()> {
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let bao = OpenBao::start(dir.path()).await?;
    let admin = bao.admin()?;
    put_many(&admin, "many", 30).await?;
    admin
        .put_kv2("secret", "many/sub/deep", json!({ "v": "x" }))
        .await?;
    admin
        .put_kv2("secret", "lone/a", json!({ "v": "x" }))
        .await?;
    put_many(&admin, "big", 450).await?;
    for _ in 0..2 {
        admin
            .put_kv2("secret", "many/k005", json!({ "v": "y" }))
            .await?;
    }

    // 25 of many/ (two spellings of one), one missing, a lone path, 300 of big/ (450 keys).
    let mut paths: BTreeSet<String> = (0..25).map(|i| format!("secret/many/k{i:03}")).collect();
    paths.insert("secret/data/many/k001".to_string());
    paths.insert("secret/many/nothere".to_string());
    paths.insert("secret/lone/a".to_string());
    paths.extend((100..400).map(|i| format!("secret/big/k{i:03}")));
    let c = client(&bao.addr, ROOT_TOKEN).await?;
    let expected = per_path(&c, &paths).await;
    assert_eq!(expected.get("secret/many/k005"), Some(&3), "{expected:?}");
    assert_eq!(expected.len(), paths.len() - 1, "all but the missing one");

    let mut polling = Polling::new();
    let from = bao.audited_requests()?.len();
    let result = polling.poll(&c, &paths).await;
    let found: BTreeMap<String, u64> = result.versions.clone().into_iter().collect();
    assert_eq!(found, expected, "the same versions as per-path reads");
    assert_eq!(
        result
            .errors
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        ["secret/many/nothere"],
        "a missing secret is read per path and reported as before"
    );
    assert!(result.errors[0].1.is_not_found(), "{:?}", result.errors);
    assert!(result.written.contains_key("secret/many/k005"));
    // many/: one page; big/: 300 names from k100 to k399 in 2 pages of 200; then the missing
    // one and the lone one per path.
    let (listings, reads) = metadata_requests(&bao, from)?;
    assert_eq!(
        (listings, reads),
        (3, 2),
        "listing pages and per-path reads"
    );
    assert_eq!(result.requests, 5);
    let per_path_cost = paths.len() - 1; // two spellings of one secret are one request
    assert!(per_path_cost >= 20 * result.requests);

    // A rotation is seen on the next poll.
    admin
        .put_kv2("secret", "big/k250", json!({ "v": "z" }))
        .await?;
    let result = polling.poll(&c, &paths).await;
    assert_eq!(result.versions["secret/big/k250"], 2);
    assert_eq!(result.versions["secret/data/many/k001"], 1);

    // Two names at both ends of big/: one page cannot reach the second (it would take 3), so
    // listing stops at one page and reads the other per path; then per path only.
    let ends: BTreeSet<String> = ["secret/big/k000", "secret/big/k449"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut polling = Polling::new();
    let from = bao.audited_requests()?.len();
    let first = polling.poll(&c, &ends).await;
    assert_eq!(first.versions.len(), 2);
    assert_eq!(metadata_requests(&bao, from)?, (1, 1));
    let from = bao.audited_requests()?.len();
    let second = polling.poll(&c, &ends).await;
    assert_eq!(second.versions.len(), 2);
    assert_eq!(
        metadata_requests(&bao, from)?,
        (0, 2),
        "remembered: never more than per path"
    );
    Ok(())
}

#[tokio::test]
async fn a_token_that_may_not_list_falls_back_to_per_path_reads_once_refused() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let bao = OpenBao::start(dir.path()).await?;
    let admin = bao.admin()?;
    put_many(&admin, "team", 5).await?;
    admin
        .put_policy(
            "meta-only",
            r#"path "secret/metadata/*" { capabilities = ["read"] }"#,
        )
        .await?;
    let token = admin
        .write("auth/token/create", json!({ "policies": ["meta-only"] }))
        .await?["auth"]["client_token"]
        .as_str()
        .context("no token")?
        .to_string();
    let c = client(&bao.addr, &token).await?;
    let paths: BTreeSet<String> = (0..5).map(|i| format!("secret/team/k{i:03}")).collect();
    let mut polling = Polling::new();

    let from = bao.audited_requests()?.len();
    let first = polling.poll(&c, &paths).await;
    assert_eq!(first.versions.len(), 5, "{:?}", first.errors);
    assert!(
        first.errors.is_empty(),
        "a refused listing is no path's error"
    );
    assert_eq!(metadata_requests(&bao, from)?, (1, 5));
    assert_eq!(first.requests, 6);

    let from = bao.audited_requests()?.len();
    let second = polling.poll(&c, &paths).await;
    assert_eq!(second.versions.len(), 5);
    assert_eq!(
        metadata_requests(&bao, from)?,
        (0, 5),
        "the refusal is remembered"
    );
    assert_eq!(polling.listings.len(), 1);
    Ok(())
}
