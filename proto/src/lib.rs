//! Fulcrum's wire contract and the validated domain types both planes share.
//!
//! `pb` is generated from `fulcrum/v1/*.proto`. Wire types stop at the edge of this crate's
//! users: each plane converts them into the types of [`model`] with `TryFrom`, which checks
//! names, URLs and enums once.

/// Generated protobuf messages and gRPC services of package `fulcrum.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("fulcrum.v1");

    /// Encoded `FileDescriptorSet` of every `fulcrum.v1` file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fulcrum_descriptor");
}

pub mod model;
