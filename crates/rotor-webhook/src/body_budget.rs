//! Who may hold how many bytes of request bodies at once: everyone together, one peer address,
//! one connection. Bytes are reserved as they arrive, never from a declared length, so a client
//! that declares 3 MiB and sends a byte a second holds one byte; a client that sends most of a
//! body and stalls holds at most its connection's and its address's share, so other peers (the
//! API server among them) keep the rest of the budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

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
}

#[derive(Debug)]
struct PeerEntry {
    share: Arc<Semaphore>,
    connections: usize,
}

impl BodyBudget {
    pub fn new(sizes: BudgetSizes) -> Arc<Self> {
        Arc::new(Self {
            sizes,
            total: Arc::new(Semaphore::new(sizes.total)),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// The shares a new connection from `peer` draws from.
    pub fn connect(self: &Arc<Self>, peer: IpAddr) -> Arc<ConnectionBudget> {
        let share = {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            let entry = peers.entry(peer).or_insert_with(|| PeerEntry {
                share: Arc::new(Semaphore::new(self.sizes.per_peer)),
                connections: 0,
            });
            entry.connections += 1;
            entry.share.clone()
        };
        Arc::new(ConnectionBudget {
            budget: self.clone(),
            peer: Some(peer),
            connection: Arc::new(Semaphore::new(self.sizes.per_connection)),
            peer_share: share,
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
        })
    }

    /// Peer addresses with an open connection.
    pub fn peers(&self) -> usize {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).len()
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
}

impl Drop for ConnectionBudget {
    fn drop(&mut self) {
        let Some(peer) = self.peer else { return };
        let mut peers = self.budget.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = peers.get_mut(&peer) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                peers.remove(&peer);
            }
        }
    }
}

impl ConnectionBudget {
    /// Reserves `bytes` from the connection's share, then the peer's, then the total (always in
    /// that order), waiting for room in each.
    pub async fn reserve(&self, bytes: usize) -> Result<Held, AcquireError> {
        // More than u32::MAX is more than any share: it waits, as any reservation over a share
        // does, until the caller's deadline (its size check comes first in practice).
        let count = u32::try_from(bytes).unwrap_or(u32::MAX);
        let connection = self.connection.clone().acquire_many_owned(count).await?;
        let peer = self.peer_share.clone().acquire_many_owned(count).await?;
        let total = self.budget.total.clone().acquire_many_owned(count).await?;
        Ok(Held(vec![connection, peer, total]))
    }
}

/// Bytes held by one body, in each share it draws from; released on drop.
#[derive(Debug, Default)]
pub struct Held(Vec<OwnedSemaphorePermit>);

impl Held {
    /// Adds `more` to what is held.
    pub fn merge(&mut self, more: Held) {
        if self.0.is_empty() {
            *self = more;
            return;
        }
        for (held, extra) in self.0.iter_mut().zip(more.0) {
            held.merge(extra);
        }
    }

    /// Bytes held (in the total).
    pub fn bytes(&self) -> usize {
        self.0.last().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SIZES: BudgetSizes = BudgetSizes {
        total: 100,
        per_peer: 40,
        per_connection: 30,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    async fn granted(c: &ConnectionBudget, bytes: usize) -> Option<Held> {
        tokio::time::timeout(Duration::from_millis(50), c.reserve(bytes))
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
}
