//! Generates the Rust code of `proto/failover/v1/*.proto` with the vendored
//! `protoc`, so no system protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/failover/v1/step_task.proto",
        "proto/failover/v1/step_coordination.proto",
        "proto/failover/v1/job_status.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
