//! Turns at an origin address: probe never becomes the load it diagnoses. Requests to one
//! origin address — every site's, every route's that dials it — take a turn of a few
//! (`per_origin`, 2 by default) at a time, across the whole process; a status page read takes
//! every turn at once, so the pool it describes holds none of probe's own page requests. A
//! request's timings start once it has its turn: waiting for it is not the server's time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::settings::DEFAULT_PER_ORIGIN;

/// The turns of each origin address, for the whole process (every site of a config, and
/// every config a reload brings, share them).
static GATES: Mutex<Option<HashMap<IpAddr, Gate>>> = Mutex::new(None);

/// One address's turns, and how many there are.
struct Gate {
    turns: u32,
    semaphore: Arc<Semaphore>,
}

/// A request's turn at an origin address, held until it is dropped (or given back earlier:
/// `at_most`).
#[derive(Debug)]
pub struct Turn {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Turn {
    /// Gives the turn back after `hold` at the latest, if the request still runs then. A
    /// status page is read the moment PHP-FPM takes the request: holding every turn past
    /// that would only keep our page requests waiting on a page that trickles or hangs.
    pub fn at_most(self, hold: Duration) -> Turn {
        let permit = self.permit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            release(&permit);
        });
        self
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        release(&self.permit);
    }
}

fn release(permit: &Mutex<Option<OwnedSemaphorePermit>>) {
    permit
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
}

/// Waits for a turn at `address` (of `per_origin` turns; all of them for a status page read,
/// `exclusive`), at most `wait`: a request that waited that long goes ahead anyway, so a
/// slow origin delays its probes but never stops them.
pub async fn turn(address: IpAddr, per_origin: u32, exclusive: bool, wait: Duration) -> Turn {
    let turns = per_origin.max(1);
    let semaphore = {
        let mut gates = GATES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let gates = gates.get_or_insert_with(HashMap::new);
        let gate = gates.entry(address).or_insert_with(|| Gate {
            turns,
            semaphore: Arc::new(Semaphore::new(turns as usize)),
        });
        if gate.turns != turns {
            // A new setting: new turns (requests holding old ones finish on those).
            *gate = Gate {
                turns,
                semaphore: Arc::new(Semaphore::new(turns as usize)),
            };
        }
        gate.semaphore.clone()
    };
    let wanted = if exclusive { turns } else { 1 };
    // Tokio's semaphore is fair: a status read waiting for every turn goes before the page
    // requests queued after it.
    let permit = tokio::time::timeout(wait, semaphore.acquire_many_owned(wanted))
        .await
        .ok()
        .and_then(Result::ok);
    if permit.is_none() {
        tracing::debug!(%address, waited_ms = wait.as_millis() as u64, "no turn at the origin in time; going ahead");
    }
    Turn {
        permit: Arc::new(Mutex::new(permit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn at_most_the_turns_run_at_once_and_an_exclusive_read_runs_alone() {
        let address: IpAddr = "192.0.2.77".parse().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let alone = Arc::new(AtomicUsize::new(usize::MAX));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (running, most, alone) = (running.clone(), most.clone(), alone.clone());
            tasks.push(tokio::spawn(async move {
                let exclusive = i == 3;
                let _turn = turn(address, 2, exclusive, Duration::from_secs(10)).await;
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if exclusive {
                    alone.store(now, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(alone.load(Ordering::SeqCst), 1, "the status read ran alone");
    }

    #[tokio::test]
    async fn a_turn_held_at_most_a_while_is_given_back_then() {
        let address: IpAddr = "192.0.2.79".parse().unwrap();
        let _long = turn(address, 1, true, Duration::from_secs(1))
            .await
            .at_most(Duration::from_millis(50));
        let started = tokio::time::Instant::now();
        let _next = turn(address, 1, false, Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_request_waits_at_most_its_bound() {
        let address: IpAddr = "192.0.2.78".parse().unwrap();
        let _held = turn(address, 1, false, Duration::from_secs(1)).await;
        let started = tokio::time::Instant::now();
        let _anyway = turn(address, 1, false, Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(2));
    }
}
