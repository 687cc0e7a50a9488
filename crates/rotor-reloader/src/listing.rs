//! Reading many paths' versions in one request: where the store lists a directory's versions
//! (OpenBao's `detailed-metadata`, pages of [`PAGE_KEYS`] keys), the watched secrets of one
//! (mount, directory) are read by listing it, from just before the first watched name to the
//! last, whenever that takes fewer requests than one metadata read per path. What the listing
//! does not answer (a missing secret, a directory too large to be worth it, a store without the
//! endpoint such as Vault, a token without `list` on it) is read per path as before, so a poll
//! never asks the store for more than per-path polling would, but once per directory every
//! [`REMEMBER`] while a directory's size is learnt.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rotor_core::store::{MountInfo, StoreClient, StoreError};

use crate::poll::Poller;

/// Keys per listing page.
pub const PAGE_KEYS: usize = 200;
/// How long what a directory cost (or that it cannot be listed) is remembered before it is
/// tried again.
pub const REMEMBER: Duration = Duration::from_secs(600);

/// (mount, directory relative to it, empty or ending in `/`).
pub type DirKey = (String, String);

#[derive(Clone, Debug)]
struct DirMemory {
    /// Pages the last listing of the watched range took (a lower bound when it stopped early).
    pages: usize,
    /// The store does not list this directory for us (the error, to log once).
    unavailable: bool,
    at: Instant,
}

/// What each directory of one store cost to list, remembered across polls.
#[derive(Debug, Default)]
pub struct Listings {
    dirs: HashMap<DirKey, DirMemory>,
}

impl Listings {
    /// Whether to list `dir` for `watched` names now: at least two names, the store lists it,
    /// and (when known) it took fewer pages than names last time.
    pub fn worth_listing(&self, dir: &DirKey, watched: usize, now: Instant) -> bool {
        if watched < 2 {
            return false;
        }
        match self.dirs.get(dir) {
            Some(m) if now.duration_since(m.at) < REMEMBER => !m.unavailable && m.pages < watched,
            _ => true,
        }
    }

    fn listed(&mut self, dir: DirKey, pages: usize, now: Instant) {
        self.dirs.insert(
            dir,
            DirMemory {
                pages,
                unavailable: false,
                at: now,
            },
        );
    }

    /// Records that the store does not list `dir`; true when this is news (to log once).
    fn unavailable(&mut self, dir: DirKey, now: Instant) -> bool {
        let fresh = !self
            .dirs
            .get(&dir)
            .is_some_and(|m| m.unavailable && now.duration_since(m.at) < REMEMBER);
        self.dirs.insert(
            dir,
            DirMemory {
                pages: 0,
                unavailable: true,
                at: now,
            },
        );
        fresh
    }

    /// Forgets directories not remembered any more.
    pub fn forget_stale(&mut self, now: Instant) {
        self.dirs.retain(|_, m| now.duration_since(m.at) < REMEMBER);
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// The watched secrets of one directory: name → canonical path.
#[derive(Debug)]
pub struct Group {
    pub mount: MountInfo,
    pub dir: String,
    pub names: BTreeMap<String, String>,
}

impl Group {
    fn key(&self) -> DirKey {
        (self.mount.path.clone(), self.dir.clone())
    }
}

/// Splits `canonical` (on a KV v2 `mount`) into its directory and name, or `None` when it has
/// no name (ends in `/`).
pub fn dir_and_name<'a>(mount: &MountInfo, canonical: &'a str) -> Option<(&'a str, &'a str)> {
    let relative = mount.relative(canonical);
    let (dir, name) = match relative.rfind('/') {
        Some(i) => relative.split_at(i + 1),
        None => ("", relative),
    };
    (!name.is_empty()).then_some((dir, name))
}

/// The key to list after so that the page starts at `name`: `name` without its last character
/// (every key at or after `name` sorts after it), or none.
fn start_after(name: &str) -> Option<&str> {
    let mut chars = name.char_indices();
    let (last, _) = chars.next_back()?;
    (last > 0).then(|| &name[..last])
}

/// What listing one directory gave.
#[derive(Debug, Default)]
struct GroupListing {
    /// (name, version, when written) of the watched names found.
    found: Vec<(String, u64, Option<String>)>,
    pages: usize,
    /// The listing reached past the last watched name (or the directory's end).
    complete: bool,
    error: Option<StoreError>,
}

/// Lists `group` from its first watched name to its last, at most `max_pages` pages.
async fn list_group(
    poller: &Poller,
    client: &StoreClient,
    group: &Group,
    max_pages: usize,
) -> GroupListing {
    let mut out = GroupListing::default();
    let (Some(first), Some(last)) = (group.names.keys().next(), group.names.keys().next_back())
    else {
        return out;
    };
    let mut after = start_after(first).map(str::to_string);
    while out.pages < max_pages {
        poller.pace().await;
        out.pages += 1;
        let page = match client
            .list_versions(&group.mount, &group.dir, after.as_deref(), PAGE_KEYS)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        };
        for v in page.versions {
            if group.names.contains_key(&v.name) {
                out.found.push((v.name, v.version, v.written));
            }
        }
        match page.last_key {
            Some(key) if page.more && key.as_str() < last.as_str() => after = Some(key),
            _ => {
                out.complete = true;
                break;
            }
        }
    }
    out
}

/// What the listings of one poll answered.
#[derive(Debug, Default)]
pub struct Listed {
    /// (canonical path, version, when written).
    pub found: Vec<(String, u64, Option<String>)>,
    pub requests: usize,
    /// Paths the listings did not answer: read them per path.
    pub unanswered: Vec<String>,
    /// Paths whose listing failed transiently (the store is down): not read again this poll.
    pub errors: Vec<(String, StoreError)>,
    /// Directories whose listing the store refused, with the paths read per path instead:
    /// [`settle_refusals`] marks them once a path of theirs is answered.
    pub refused: Vec<(DirKey, StoreError, Vec<String>)>,
}

/// Lists every group worth listing; the others' paths are `unanswered`.
pub async fn list_groups(
    poller: &Poller,
    client: &StoreClient,
    groups: Vec<Group>,
    listings: &mut Listings,
) -> Listed {
    let now = Instant::now();
    listings.forget_stale(now);
    let mut listed = Listed::default();
    let mut to_list = Vec::new();
    for group in groups {
        if listings.worth_listing(&group.key(), group.names.len(), now) {
            to_list.push(group);
        } else {
            listed.unanswered.extend(group.names.into_values());
        }
    }
    let outcomes: Vec<(Group, GroupListing)> = futures::stream::iter(to_list)
        .map(|group| async move {
            // Fewer pages than names, so listing never costs more than reading each.
            let max_pages = group.names.len() - 1;
            let outcome = list_group(poller, client, &group, max_pages).await;
            (group, outcome)
        })
        .buffer_unordered(poller.concurrency())
        .collect()
        .await;
    for (group, outcome) in outcomes {
        listed.requests += outcome.pages;
        let key = group.key();
        match outcome.error {
            Some(e) if e.is_transient() || e.is_unavailable() => {
                listed
                    .errors
                    .extend(group.names.into_values().map(|p| (p, e.clone())));
            }
            Some(e) => {
                listed
                    .refused
                    .push((key, e, group.names.into_values().collect()));
            }
            None => {
                // A listing that stopped at its page bound has at least one more page: remember
                // it as costing as many pages as names, so it is read per path until REMEMBER.
                let pages = if outcome.complete {
                    outcome.pages
                } else {
                    group.names.len()
                };
                listings.listed(key, pages, now);
                let mut names = group.names;
                for (name, version, written) in outcome.found {
                    if let Some(canonical) = names.remove(&name) {
                        listed.found.push((canonical, version, written));
                    }
                }
                listed.unanswered.extend(names.into_values());
            }
        }
    }
    let refused: Vec<String> = listed
        .refused
        .iter()
        .flat_map(|(_, _, paths)| paths.iter().cloned())
        .collect();
    listed.unanswered.extend(refused);
    listed
}

/// After the per-path reads: a directory whose listing was refused while a path of it was read
/// is one the store will not list for this token (Vault, an OpenBao before 2.2, no `list`
/// capability): remembered for [`REMEMBER`] and logged once. When no path was answered either,
/// the token may be gone; the listing is tried again next poll.
pub fn settle_refusals(
    store: &str,
    refused: Vec<(DirKey, StoreError, Vec<String>)>,
    answered: impl Fn(&str) -> bool,
    listings: &mut Listings,
) {
    let now = Instant::now();
    for (dir, error, paths) in refused {
        if !paths.iter().any(|p| answered(p)) {
            continue;
        }
        let (mount, relative) = (&dir.0, &dir.1);
        if listings.unavailable(dir.clone(), now) {
            tracing::info!(
                store,
                directory = %format!("{mount}{relative}"),
                paths = paths.len(),
                %error,
                "the store does not list this directory's versions: its paths are read one by one (OpenBao 2.2+ lists them in one request with the list capability on {mount}detailed-metadata/{relative})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv2(path: &str) -> MountInfo {
        MountInfo {
            path: path.to_string(),
            kv_version: Some(2),
        }
    }

    #[test]
    fn a_path_splits_into_its_directory_and_name_on_its_mount() {
        let m = kv2("secret/");
        assert_eq!(dir_and_name(&m, "secret/db"), Some(("", "db")));
        assert_eq!(dir_and_name(&m, "secret/app/a/db"), Some(("app/a/", "db")));
        assert_eq!(dir_and_name(&m, "secret/app/"), None);
    }

    #[test]
    fn a_listing_starts_just_before_the_first_name() {
        assert_eq!(start_after("p10"), Some("p1"));
        assert_eq!(start_after("p"), None);
        assert_eq!(start_after("pé"), Some("p"));
        assert_eq!(start_after(""), None);
    }

    #[test]
    fn a_directory_is_listed_only_when_it_took_fewer_pages_than_its_names() {
        let t0 = Instant::now();
        let dir: DirKey = ("secret/".into(), "app/".into());
        let mut l = Listings::default();
        assert!(
            !l.worth_listing(&dir, 1, t0),
            "one name: a read is as cheap"
        );
        assert!(l.worth_listing(&dir, 2, t0), "unknown: try");
        l.listed(dir.clone(), 3, t0);
        assert!(!l.worth_listing(&dir, 3, t0));
        assert!(l.worth_listing(&dir, 4, t0));
        assert!(
            l.worth_listing(&dir, 3, t0 + REMEMBER),
            "learnt again after a while"
        );
        assert!(l.unavailable(dir.clone(), t0), "news the first time");
        assert!(!l.unavailable(dir.clone(), t0), "then not");
        assert!(!l.worth_listing(&dir, 500, t0));
        l.forget_stale(t0 + REMEMBER);
        assert!(l.is_empty());
    }
}
