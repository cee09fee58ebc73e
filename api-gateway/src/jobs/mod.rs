//! Failover jobs: their model, their SQL, and the service that moves them.

pub mod model;
pub mod service;
pub mod store;
