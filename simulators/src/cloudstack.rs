//! The CloudStack management-server simulator.
