//! `virt-customize-standin`: a stand-in for libguestfs' `virt-customize`
//! limited to VirtIO driver injection; see
//! [`simulators::virt_customize_standin`] for its controls.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    simulators::virt_customize_standin::main(std::env::args_os().skip(1).collect()).await
}
