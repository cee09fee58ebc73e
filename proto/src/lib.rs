//! The protobuf contracts between the gateway, the step workers and the
//! dashboards: the step task published on RabbitMQ, the step coordination
//! service (claim / heartbeat / report) and the job status service.

#![allow(missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("failover.v1");
}
