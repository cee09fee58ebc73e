//! What the fault tests and the chaos suite need besides the in-process
//! `Stack` of `common`: the real binaries as separate processes, an
//! interposer on the step-coordination gRPC that can hold a worker at a
//! chosen point, outages of the shared RabbitMQ and Postgres that always
//! end (guards), and more replicated VMs seeded through the simulators'
//! admin APIs.

#![allow(dead_code)]

pub mod processes;
pub mod seed;
pub mod services;
pub mod tap;

use std::time::Duration;

/// Polls `check` every 100 ms until it returns `Some`, or panics with
/// `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
