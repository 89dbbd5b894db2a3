//! The gRPC edge: the only place protobuf types exist. The replica service
//! is defined in `proto/replica.proto`; its server and the network
//! `ReplicaClient` arrive with the cluster.

/// Generated code for `vinzclortho.replica.v1`.
pub mod pb {
    tonic::include_proto!("vinzclortho.replica.v1");

    /// Serialized descriptors of every service, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vinzclortho_descriptor");
}
