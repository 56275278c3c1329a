//! The wire types of millrace: every message and gRPC service in `proto/millrace/v1`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("millrace.v1");
}

/// Encoded `FileDescriptorSet` of all millrace protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/millrace_descriptor.bin"));

pub use v1::*;
