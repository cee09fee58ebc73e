//! Simulators of the systems the step workers drive, faithful to the wire:
//! a CloudStack management server ([`cloudstack`]), a LINSTOR controller
//! ([`linstor`]) and, as the `virt-customize-standin` binary, a stand-in for
//! libguestfs' `virt-customize`. Each server keeps its state in memory and has
//! an admin API under `/sim/` to seed state, inspect it and inject faults.

pub mod cloudstack;
pub mod faults;
pub mod linstor;
pub mod server;
pub mod virt_customize_standin;
