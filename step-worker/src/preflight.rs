//! Preflight checks of the configured external systems.
