//! The activator: holds the requests of a Function that has no ready replica until one is
//! ready, and asks for one through the API.
//!
//! Asking is the [`Signal`]: the agent's writes the annotation
//! [`bosun_api::function::ACTIVATION_ANNOTATION`] on the Function, which the control plane
//! watches and answers by scaling the Function up. It is sent when the first request is held,
//! and again every second while requests still wait (in case the answer was lost). Held
//! requests are bounded in number per Function (`--activator-queue`: past it, `503`) and in
//! time (the Function's timeout: past it, `504`).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::{Response, StatusCode};
use tokio::time::Instant;

use super::{Body, Routes, status};

/// Asks the control plane to activate the Function (namespace, name).
pub type Signal = Arc<dyn Fn(String, String) -> BoxFuture<'static, ()> + Send + Sync>;

/// How often a Function whose requests still wait is asked for again.
const ASK_AGAIN: Duration = Duration::from_secs(1);

type Key = (String, String);

pub struct Activator {
    queue: usize,
    signal: Signal,
    /// Requests held per Function, and when it was last asked for.
    held: Mutex<HashMap<Key, (usize, Option<Instant>)>>,
}

/// Why a held request was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--activator-queue` requests of this Function were already waiting.
    QueueFull(usize),
    /// No replica was ready within the Function's timeout.
    Timeout,
    /// The Function went away while the request waited.
    Gone,
}

impl Refusal {
    pub fn response(self, name: &str, namespace: &str, timeout: Duration) -> Response<Body> {
        match self {
            Refusal::QueueFull(queue) => status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!(
                    "function {name}.{namespace} is starting and {queue} requests already wait for it"
                ),
            ),
            Refusal::Timeout => status(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                &format!("function {name}.{namespace} had no ready replica within {timeout:?}"),
            ),
            Refusal::Gone => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("function {name}.{namespace} was deleted"),
            ),
        }
    }
}

/// One held request: leaves the count when dropped, however the request ends.
struct Held<'a> {
    activator: &'a Activator,
    key: Key,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = self.activator.held.lock().unwrap();
        if let Some((count, _)) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Activator {
    pub fn new(queue: usize, signal: Signal) -> Self {
        Self {
            queue,
            signal,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The ready replicas of (namespace, name) other than `except` (those that refused this
    /// request already). When there are none, holds the request until there are, asking the
    /// control plane for one, or gives it up.
    pub async fn hold(
        &self,
        routes: &Routes,
        namespace: &str,
        name: &str,
        except: &[SocketAddrV4],
        deadline: Instant,
    ) -> Result<Vec<SocketAddrV4>, Refusal> {
        let usable = || -> Result<Vec<SocketAddrV4>, Refusal> {
            let route = routes.get(namespace, name).ok_or(Refusal::Gone)?;
            Ok(route
                .endpoints
                .into_iter()
                .filter(|e| !except.contains(e))
                .collect())
        };
        let endpoints = usable()?;
        if !endpoints.is_empty() {
            return Ok(endpoints);
        }
        let key = (namespace.to_string(), name.to_string());
        let _held = self.enter(&key)?;
        let mut changes = routes.subscribe();
        loop {
            let endpoints = usable()?;
            if !endpoints.is_empty() {
                return Ok(endpoints);
            }
            self.ask(&key);
            let now = Instant::now();
            if now >= deadline {
                return Err(Refusal::Timeout);
            }
            let _ = tokio::time::timeout_at(deadline.min(now + ASK_AGAIN), changes.changed()).await;
        }
    }

    fn enter(&self, key: &Key) -> Result<Held<'_>, Refusal> {
        let mut held = self.held.lock().unwrap();
        let (count, _) = held.entry(key.clone()).or_insert((0, None));
        if *count >= self.queue {
            return Err(Refusal::QueueFull(self.queue));
        }
        *count += 1;
        Ok(Held {
            activator: self,
            key: key.clone(),
        })
    }

    /// Sends the signal, unless it went out for this Function less than a second ago.
    fn ask(&self, key: &Key) {
        let now = Instant::now();
        {
            let mut held = self.held.lock().unwrap();
            let Some((_, asked)) = held.get_mut(key) else {
                return;
            };
            if asked.is_some_and(|at| now < at + ASK_AGAIN) {
                return;
            }
            *asked = Some(now);
        }
        tokio::spawn((self.signal)(key.0.clone(), key.1.clone()));
    }

    /// Requests held now for (namespace, name).
    pub fn held(&self, namespace: &str, name: &str) -> usize {
        let held = self.held.lock().unwrap();
        held.get(&(namespace.to_string(), name.to_string()))
            .map_or(0, |(count, _)| *count)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FunctionRoute, RouteTable};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn routes(endpoints: Vec<SocketAddrV4>) -> RouteTable {
        RouteTable::from([(
            ("default".to_string(), "hello".to_string()),
            FunctionRoute {
                endpoints,
                timeout: Duration::from_secs(60),
                service: None,
            },
        )])
    }

    #[tokio::test(start_paused = true)]
    async fn held_requests_go_on_when_a_replica_is_ready_and_are_bounded() {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let signal: Signal = Arc::new(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        });
        let activator = Arc::new(Activator::new(2, signal));
        let table = Arc::new(Routes::default());
        table.update(routes(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let (activator, table) = (activator.clone(), table.clone());
                tokio::spawn(async move {
                    activator
                        .hold(&table, "default", "hello", &[], deadline)
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(activator.held("default", "hello"), 2);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked once for both");
        // A third is refused: the queue holds two.
        assert_eq!(
            activator
                .hold(&table, "default", "hello", &[], deadline)
                .await
                .unwrap_err(),
            Refusal::QueueFull(2)
        );
        // Still waiting a second later: asked again.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        let ready: SocketAddrV4 = "10.0.0.5:8080".parse().unwrap();
        table.update(routes(vec![ready]));
        for w in waiting {
            assert_eq!(w.await.unwrap().unwrap(), vec![ready]);
        }
        assert_eq!(activator.held("default", "hello"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_held_past_its_deadline_or_its_function_is_given_up() {
        let signal: Signal = Arc::new(|_, _| Box::pin(async {}));
        let activator = Activator::new(10, signal);
        let table = Routes::default();
        table.update(routes(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(3);
        assert_eq!(
            activator
                .hold(&table, "default", "hello", &[], deadline)
                .await
                .unwrap_err(),
            Refusal::Timeout
        );
        table.update(RouteTable::new());
        assert_eq!(
            activator
                .hold(
                    &table,
                    "default",
                    "hello",
                    &[],
                    deadline + Duration::from_secs(9)
                )
                .await
                .unwrap_err(),
            Refusal::Gone
        );
    }
}
