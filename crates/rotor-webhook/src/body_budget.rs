//! Who may hold how many bytes of request bodies at once: everyone together, one peer address,
//! one connection. Bytes are reserved as they arrive, never from a declared length, so a client
//! that declares 3 MiB and sends a byte a second holds one byte; a client that sends most of a
//! body and stalls holds at most its connection's and its address's share, so other peers (the
//! API server among them) keep the rest of the budget.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

/// The sizes of the three shares, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct BudgetSizes {
    pub total: usize,
    pub per_peer: usize,
    pub per_connection: usize,
}

/// The budget of the whole port, and the share of every peer address with a connection open.
#[derive(Debug)]
pub struct BodyBudget {
    sizes: BudgetSizes,
    total: Arc<Semaphore>,
    /// One entry per peer address with at least one open connection (so at most
    /// `--max-connections` entries).
    peers: Mutex<HashMap<IpAddr, PeerEntry>>,
    next_body: AtomicU64,
}

#[derive(Debug)]
struct PeerEntry {
    share: Arc<Semaphore>,
    connections: usize,
    /// Bytes of the total this peer's bodies hold now.
    held: Arc<AtomicUsize>,
    /// Its bodies still being read, oldest first: each can be cut, and holds so many bytes.
    reading: BTreeMap<u64, (CancellationToken, Arc<AtomicUsize>)>,
}

impl BodyBudget {
    pub fn new(sizes: BudgetSizes) -> Arc<Self> {
        Arc::new(Self {
            sizes,
            total: Arc::new(Semaphore::new(sizes.total)),
            peers: Mutex::new(HashMap::new()),
            next_body: AtomicU64::new(0),
        })
    }

    /// The shares a new connection from `peer` draws from.
    pub fn connect(self: &Arc<Self>, peer: IpAddr) -> Arc<ConnectionBudget> {
        let (share, held) = {
            let mut peers = self.lock();
            let entry = peers.entry(peer).or_insert_with(|| PeerEntry {
                share: Arc::new(Semaphore::new(self.sizes.per_peer)),
                connections: 0,
                held: Arc::new(AtomicUsize::new(0)),
                reading: BTreeMap::new(),
            });
            entry.connections += 1;
            (entry.share.clone(), entry.held.clone())
        };
        Arc::new(ConnectionBudget {
            budget: self.clone(),
            peer: Some(peer),
            connection: Arc::new(Semaphore::new(self.sizes.per_connection)),
            peer_share: share,
            peer_held: held,
        })
    }

    /// Shares of their own for a body that did not come through an accepted connection (the
    /// router called in process); it still draws from the total.
    pub fn unattributed(self: &Arc<Self>) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            budget: self.clone(),
            peer: None,
            connection: Arc::new(Semaphore::new(self.sizes.per_connection)),
            peer_share: Arc::new(Semaphore::new(self.sizes.per_peer)),
            peer_held: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PeerEntry>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `peer` must wait for `bytes` of the total: cut the oldest body still being read of the
    /// peer that holds the most, if it holds more than `peer` would with `bytes`. Returns
    /// whether a body was cut. One pass over the peers (at most `--max-connections`).
    fn cut_for(&self, peer: IpAddr, bytes: usize) -> bool {
        let peers = self.lock();
        let mine = peers
            .get(&peer)
            .map_or(0, |e| e.held.load(Ordering::SeqCst));
        let Some((_, victim)) = peers
            .iter()
            .filter(|(ip, _)| **ip != peer)
            .max_by_key(|(_, e)| e.held.load(Ordering::SeqCst))
        else {
            return false;
        };
        if victim.held.load(Ordering::SeqCst) <= mine + bytes {
            return false;
        }
        match victim
            .reading
            .values()
            .find(|(cut, held)| !cut.is_cancelled() && held.load(Ordering::SeqCst) > 0)
        {
            Some((cut, _)) => {
                cut.cancel();
                true
            }
            None => false,
        }
    }

    /// Peer addresses with an open connection.
    pub fn peers(&self) -> usize {
        self.lock().len()
    }

    /// Bytes of the total budget not held by any body.
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// Bytes held by bodies now.
    pub fn held(&self) -> usize {
        self.sizes.total.saturating_sub(self.available())
    }
}

/// What one connection's bodies draw from: its own share, its peer address's and the total.
#[derive(Debug)]
pub struct ConnectionBudget {
    budget: Arc<BodyBudget>,
    peer: Option<IpAddr>,
    connection: Arc<Semaphore>,
    peer_share: Arc<Semaphore>,
    /// Bytes of the total the peer's bodies hold now.
    peer_held: Arc<AtomicUsize>,
}

/// One body being read: cut (`cut` cancelled) when a peer holding less waits for room.
#[derive(Debug)]
pub struct BodyTicket {
    budget: Arc<BodyBudget>,
    peer: Option<IpAddr>,
    id: u64,
    pub cut: CancellationToken,
    held: Arc<AtomicUsize>,
}

impl Drop for BodyTicket {
    fn drop(&mut self) {
        let Some(peer) = self.peer else { return };
        if let Some(entry) = self.budget.lock().get_mut(&peer) {
            entry.reading.remove(&self.id);
        }
    }
}

impl Drop for ConnectionBudget {
    fn drop(&mut self) {
        let Some(peer) = self.peer else { return };
        let mut peers = self.budget.lock();
        if let Some(entry) = peers.get_mut(&peer) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                peers.remove(&peer);
            }
        }
    }
}

impl ConnectionBudget {
    /// Starts reading one body; the ticket ends its turn to be cut when dropped.
    pub fn begin_body(&self) -> BodyTicket {
        let id = self.budget.next_body.fetch_add(1, Ordering::SeqCst);
        let cut = CancellationToken::new();
        let held = Arc::new(AtomicUsize::new(0));
        if let Some(peer) = self.peer
            && let Some(entry) = self.budget.lock().get_mut(&peer)
        {
            entry.reading.insert(id, (cut.clone(), held.clone()));
        }
        BodyTicket {
            budget: self.budget.clone(),
            peer: self.peer,
            id,
            cut,
            held,
        }
    }

    /// Reserves `bytes` for `body` from the connection's share, then the peer's, then the total
    /// (always in that order), waiting for room in each; while the total has none, the largest
    /// peer's oldest body being read is cut for this one when that is fair (`cut_for`).
    pub async fn reserve(&self, bytes: usize, body: &BodyTicket) -> Result<Held, AcquireError> {
        // More than u32::MAX is more than any share: it waits, as any reservation over a share
        // does, until the caller's deadline (its size check comes first in practice).
        let count = u32::try_from(bytes).unwrap_or(u32::MAX);
        let connection = self.connection.clone().acquire_many_owned(count).await?;
        let peer = self.peer_share.clone().acquire_many_owned(count).await?;
        let total = loop {
            match self.budget.total.clone().try_acquire_many_owned(count) {
                Ok(permit) => break permit,
                // Closed: acquiring says so at once.
                Err(TryAcquireError::Closed) => {
                    break self.budget.total.clone().acquire_many_owned(count).await?;
                }
                Err(TryAcquireError::NoPermits) => {}
            }
            if let Some(peer) = self.peer {
                self.budget.cut_for(peer, bytes);
            }
            let wait = self.budget.total.clone().acquire_many_owned(count);
            if let Ok(permit) = tokio::time::timeout(Duration::from_millis(100), wait).await {
                break permit?;
            }
        };
        self.peer_held.fetch_add(bytes, Ordering::SeqCst);
        body.held.fetch_add(bytes, Ordering::SeqCst);
        Ok(Held {
            permits: vec![connection, peer, total],
            accounted: vec![(self.peer_held.clone(), bytes), (body.held.clone(), bytes)],
        })
    }
}

/// Bytes held by one body, in each share it draws from; released on drop.
#[derive(Debug, Default)]
pub struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    /// Counters of held bytes (the peer's, the body's) to give back on drop.
    accounted: Vec<(Arc<AtomicUsize>, usize)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for (counter, bytes) in &self.accounted {
            counter.fetch_sub(*bytes, Ordering::SeqCst);
        }
    }
}

impl Held {
    /// Adds `more` to what is held.
    pub fn merge(&mut self, mut more: Held) {
        self.accounted.append(&mut more.accounted);
        if self.permits.is_empty() {
            self.permits = std::mem::take(&mut more.permits);
            return;
        }
        for (held, extra) in self
            .permits
            .iter_mut()
            .zip(std::mem::take(&mut more.permits))
        {
            held.merge(extra);
        }
    }

    /// Bytes held (in the total).
    pub fn bytes(&self) -> usize {
        self.permits
            .last()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: BudgetSizes = BudgetSizes {
        total: 100,
        per_peer: 40,
        per_connection: 30,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    async fn granted(c: &ConnectionBudget, bytes: usize) -> Option<Held> {
        let body = c.begin_body();
        tokio::time::timeout(Duration::from_millis(50), c.reserve(bytes, &body))
            .await
            .ok()
            .map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn a_connection_holds_at_most_its_share_and_a_peer_at_most_its_own() {
        let budget = BodyBudget::new(SIZES);
        let a1 = budget.connect(ip(2));
        let _first = granted(&a1, 30).await.expect("a connection's whole share");
        assert!(granted(&a1, 1).await.is_none(), "over the connection share");
        let a2 = budget.connect(ip(2));
        let _second = granted(&a2, 10).await.expect("the peer's remaining 10");
        assert!(granted(&a2, 1).await.is_none(), "over the peer share");
        // Another address still finds the rest of the total.
        let b = budget.connect(ip(3));
        let held = granted(&b, 30).await.expect("another peer is not held up");
        assert_eq!(held.bytes(), 30);
        assert_eq!(budget.available(), 100 - 70);
    }

    #[tokio::test]
    async fn held_bytes_return_on_drop_and_a_peer_is_forgotten_with_its_last_connection() {
        let budget = BodyBudget::new(SIZES);
        let a = budget.connect(ip(2));
        let b = budget.connect(ip(2));
        let mut held = granted(&a, 10).await.unwrap();
        held.merge(granted(&a, 5).await.unwrap());
        assert_eq!(held.bytes(), 15);
        assert_eq!(budget.available(), 85);
        drop(held);
        assert_eq!(budget.available(), 100);
        assert_eq!(budget.peers(), 1);
        drop(a);
        assert_eq!(
            budget.peers(),
            1,
            "one connection of the peer is still open"
        );
        drop(b);
        assert_eq!(budget.peers(), 0);
    }

    #[tokio::test]
    async fn a_peer_waiting_for_room_cuts_the_largest_peers_oldest_body_and_never_a_smaller_one() {
        let budget = BodyBudget::new(SIZES);
        let mut stalled = Vec::new();
        for last in [2, 3, 4] {
            let c = budget.connect(ip(last));
            let body = c.begin_body();
            let held = c.reserve(30, &body).await.unwrap();
            stalled.push((c, body, held));
        }
        assert_eq!(budget.available(), 10);
        // A peer that holds 10 and wants 10 more: equal to nobody's 30 - it may not cut.
        let small = budget.connect(ip(5));
        let small_body = small.begin_body();
        let _small_held = small.reserve(10, &small_body).await.unwrap();
        assert!(!budget.cut_for(ip(5), 25), "30 is not more than 10 + 25");
        assert!(stalled.iter().all(|(_, b, _)| !b.cut.is_cancelled()));
        // A new peer waiting for 10: the oldest body of a peer holding 30 is cut.
        let newcomer = budget.connect(ip(9));
        let body = newcomer.begin_body();
        let waiting = tokio::spawn(async move {
            let held = newcomer.reserve(10, &body).await.map(|h| h.bytes());
            (newcomer, body, held)
        });
        // Evidence first: one stalled body is cut; its reader gives up what it held.
        let cut = loop {
            if let Some(i) = stalled.iter().position(|(_, b, _)| b.cut.is_cancelled()) {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        drop(stalled.remove(cut));
        let (_c, _b, held) = waiting.await.unwrap();
        assert_eq!(held.unwrap(), 10, "the newcomer got its room");
        assert!(
            stalled.iter().all(|(_, b, _)| !b.cut.is_cancelled()),
            "one body cut, not more"
        );
    }
}
