//! A value tasks wait on, waking them in the order they began waiting.
//!
//! tokio's `watch` channel would do, except that it spreads its waiters over
//! eight queues picked at random (to spread contention) and wakes the queues
//! in turn: its waiters wake in an order no seed controls, so the
//! deterministic simulator could not replay a run. One `Notify` keeps them in
//! line; membership changes are rare, so the contention does not matter.

use std::sync::RwLock;

use tokio::sync::Notify;

pub struct Watched<T> {
    /// The value and how many times it changed.
    state: RwLock<(T, u64)>,
    notify: Notify,
}

impl<T: Clone> Watched<T> {
    pub fn new(value: T) -> Watched<T> {
        Watched { state: RwLock::new((value, 0)), notify: Notify::new() }
    }

    pub fn get(&self) -> T {
        self.state.read().expect("watched lock").0.clone()
    }

    /// Reads the value in place.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.state.read().expect("watched lock").0)
    }

    /// Counts changes: a waiter remembers it and waits for another.
    pub fn version(&self) -> u64 {
        self.state.read().expect("watched lock").1
    }

    /// Sets the value, wakes every waiter, returns the old value.
    pub fn replace(&self, value: T) -> T {
        let old = {
            let mut state = self.state.write().expect("watched lock");
            state.1 += 1;
            std::mem::replace(&mut state.0, value)
        };
        self.notify.notify_waiters();
        old
    }

    /// Changes the value in place if `f` says it did; wakes waiters then.
    pub fn modify(&self, f: impl FnOnce(&mut T) -> bool) -> bool {
        let modified = {
            let mut state = self.state.write().expect("watched lock");
            let modified = f(&mut state.0);
            if modified {
                state.1 += 1;
            }
            modified
        };
        if modified {
            self.notify.notify_waiters();
        }
        modified
    }

    /// Waits until the value satisfies `ready`, and returns it.
    pub async fn wait_for(&self, ready: impl Fn(&T) -> bool) -> T {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change between the check and
            // the wait still wakes us.
            notified.as_mut().enable();
            {
                let state = self.state.read().expect("watched lock");
                if ready(&state.0) {
                    return state.0.clone();
                }
            }
            notified.await;
        }
    }

    /// Waits until the value changed after `version`; returns the new version.
    pub async fn changed_since(&self, version: u64) -> u64 {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.version();
            if now != version {
                return now;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_see_changes_made_before_and_after_they_wait() {
        let watched = Arc::new(Watched::new(0u32));
        watched.replace(1);
        assert_eq!(watched.wait_for(|v| *v == 1).await, 1, "a value already there is seen at once");
        let waiter = tokio::spawn({
            let watched = Arc::clone(&watched);
            async move { watched.wait_for(|v| *v >= 3).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        watched.replace(2);
        assert!(watched.modify(|v| {
            *v = 3;
            true
        }));
        assert!(!watched.modify(|_| false), "an unmodified value is not a change");
        assert_eq!(waiter.await.unwrap(), 3);
        let version = watched.version();
        let changed = tokio::spawn({
            let watched = Arc::clone(&watched);
            async move { watched.changed_since(version).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        watched.replace(4);
        assert_eq!(changed.await.unwrap(), version + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_in_the_order_they_began_waiting() {
        let watched = Arc::new(Watched::new(false));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (watched, order) = (Arc::clone(&watched), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                watched.wait_for(|v| *v).await;
                order.lock().unwrap().push(i);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        watched.replace(true);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..16).collect::<Vec<_>>());
    }
}
