//! The LINSTOR controller simulator.
