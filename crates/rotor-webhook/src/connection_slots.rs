//! Who may hold the HTTPS port's connection slots: at most `per_peer` connections of one peer
//! address, at most `total` in all, and when every slot is taken a new peer still gets one,
//! from the peer that holds the most (its oldest idle connection first). So no number of idle
//! or stalled connections from a few addresses keeps the API server out, and an attacker needs
//! more addresses than the API server has connections to hold it back at all.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The two caps, in connections.
#[derive(Clone, Copy, Debug)]
pub struct SlotSizes {
    pub total: usize,
    pub per_peer: usize,
}

#[derive(Debug)]
pub struct ConnectionSlots {
    sizes: SlotSizes,
    inner: Mutex<Inner>,
    /// Shows the slots held.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Debug, Default)]
struct Inner {
    held: usize,
    next_id: u64,
    /// One entry per peer with a connection; its connections by age (ids grow).
    peers: HashMap<IpAddr, BTreeMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    close: CancellationToken,
    busy: Arc<AtomicUsize>,
}

/// Why a connection was closed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer already holds `per_peer` connections (`--max-connections-per-peer`).
    PeerLimit,
    /// Every slot is taken by peers holding no more than this one (`--max-connections`).
    Full,
}

impl Refused {
    /// The `reason` label of the refused counter.
    pub fn reason(self) -> &'static str {
        match self {
            Self::PeerLimit => "peer_connection_limit",
            Self::Full => "connection_limit",
        }
    }
}

/// One accepted connection's slot, freed on drop. `close` is cancelled when the server stops
/// or the slot is given to another peer; `busy` counts the requests being served on it.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    peer: IpAddr,
    id: u64,
    pub close: CancellationToken,
    pub busy: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        let Some(conns) = inner.peers.get_mut(&self.peer) else {
            return;
        };
        // Absent when the slot was given away already (and counted then).
        if conns.remove(&self.id).is_some() {
            if conns.is_empty() {
                inner.peers.remove(&self.peer);
            }
            inner.held = inner.held.saturating_sub(1);
            self.slots.show(inner.held);
        }
    }
}

impl ConnectionSlots {
    pub fn new(sizes: SlotSizes, gauge: prometheus_client::metrics::gauge::Gauge) -> Arc<Self> {
        Arc::new(Self {
            gauge,
            sizes: SlotSizes {
                total: sizes.total.max(1),
                per_peer: sizes.per_peer.clamp(1, sizes.total.max(1)),
            },
            inner: Mutex::new(Inner::default()),
        })
    }

    fn show(&self, held: usize) {
        self.gauge.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `peer`, whose close token is a child of `stop`. When
    /// every slot is taken, the oldest idle (else the oldest) connection of the peer holding the
    /// most is closed for it, if that peer holds at least two more than `peer` does.
    /// Cost: one pass over the peers, only when every slot is taken.
    pub fn accept(
        self: &Arc<Self>,
        peer: IpAddr,
        stop: &CancellationToken,
    ) -> Result<Slot, Refused> {
        let mut inner = self.lock();
        let own = inner.peers.get(&peer).map_or(0, BTreeMap::len);
        if own >= self.sizes.per_peer {
            return Err(Refused::PeerLimit);
        }
        if inner.held >= self.sizes.total {
            let Some((victim, count)) = inner
                .peers
                .iter()
                .map(|(ip, conns)| (*ip, conns.len()))
                .max_by_key(|(_, n)| *n)
            else {
                return Err(Refused::Full);
            };
            if count < own + 2 {
                return Err(Refused::Full);
            }
            let conns = inner.peers.get_mut(&victim).ok_or(Refused::Full)?;
            let id = conns
                .iter()
                .find(|(_, e)| e.busy.load(Ordering::SeqCst) == 0)
                .or_else(|| conns.iter().next())
                .map(|(id, _)| *id)
                .ok_or(Refused::Full)?;
            if let Some(entry) = conns.remove(&id) {
                // An idle connection ends now; a busy one finishes its requests first.
                entry.close.cancel();
                inner.held = inner.held.saturating_sub(1);
            }
            tracing::debug!(%victim, %peer, "every connection slot taken: one of the largest peer's connections closed for a new peer");
        }
        inner.held += 1;
        self.show(inner.held);
        inner.next_id += 1;
        let id = inner.next_id;
        let close = stop.child_token();
        let busy = Arc::new(AtomicUsize::new(0));
        inner.peers.entry(peer).or_default().insert(
            id,
            Entry {
                close: close.clone(),
                busy: busy.clone(),
            },
        );
        Ok(Slot {
            slots: self.clone(),
            peer,
            id,
            close,
            busy,
        })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.lock().held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_peer_holds_at_most_its_share() {
        let slots = ConnectionSlots::new(
            SlotSizes {
                total: 10,
                per_peer: 3,
            },
            Default::default(),
        );
        let stop = CancellationToken::new();
        let held: Vec<Slot> = (0..3)
            .map(|_| slots.accept(ip(1), &stop).unwrap())
            .collect();
        assert_eq!(slots.accept(ip(1), &stop).unwrap_err(), Refused::PeerLimit);
        assert!(slots.accept(ip(2), &stop).is_ok());
        drop(held);
        assert_eq!(slots.held(), 0, "every slot returned on drop");
    }

    #[test]
    fn a_new_peer_takes_the_oldest_idle_slot_of_the_largest_peer_when_all_are_taken() {
        let slots = ConnectionSlots::new(
            SlotSizes {
                total: 4,
                per_peer: 4,
            },
            Default::default(),
        );
        let stop = CancellationToken::new();
        let attacker: Vec<Slot> = (0..4)
            .map(|_| slots.accept(ip(1), &stop).unwrap())
            .collect();
        attacker[0].busy.store(1, Ordering::SeqCst);
        let api_server = slots.accept(ip(9), &stop).expect("a new peer gets a slot");
        assert!(!attacker[0].close.is_cancelled(), "the busy one is spared");
        assert!(
            attacker[1].close.is_cancelled(),
            "the oldest idle one closes"
        );
        assert_eq!(slots.held(), 4);
        // The attacker, now holding 3 against the newcomer's 1, cannot take it back.
        let second = slots.accept(ip(9), &stop).expect("3 >= 1 + 2: another one");
        assert!(attacker[2].close.is_cancelled());
        assert_eq!(slots.accept(ip(1), &stop).unwrap_err(), Refused::Full);
        assert_eq!(
            slots.accept(ip(9), &stop).unwrap_err(),
            Refused::Full,
            "2 against 2: even"
        );
        drop((api_server, second));
        drop(attacker);
        assert_eq!(slots.held(), 0, "a slot given away is not freed twice");
    }

    #[test]
    fn stopping_the_server_closes_every_slot() {
        let slots = ConnectionSlots::new(
            SlotSizes {
                total: 2,
                per_peer: 2,
            },
            Default::default(),
        );
        let stop = CancellationToken::new();
        let slot = slots.accept(ip(1), &stop).unwrap();
        stop.cancel();
        assert!(slot.close.is_cancelled());
    }
}
