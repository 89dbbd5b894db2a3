//! The gRPC edge: the only place protobuf types exist. Services are defined
//! in `proto/` (one file per service, versioned packages). Every internal
//! call names the cluster and the node it is for, and servers refuse calls
//! meant for others (`identity`).

/// Generated code, nested as the protobuf packages are so that cross-package
/// references (`transfer.v1` uses `replica.v1` types) resolve.
pub mod generated {
    pub mod vinzclortho {
        pub mod replica {
            pub mod v1 {
                tonic::include_proto!("vinzclortho.replica.v1");
            }
        }
        pub mod membership {
            pub mod v1 {
                tonic::include_proto!("vinzclortho.membership.v1");
            }
        }
        pub mod transfer {
            pub mod v1 {
                tonic::include_proto!("vinzclortho.transfer.v1");
            }
        }
        pub mod coverage {
            pub mod v1 {
                tonic::include_proto!("vinzclortho.coverage.v1");
            }
        }
        pub mod antientropy {
            pub mod v1 {
                tonic::include_proto!("vinzclortho.antientropy.v1");
            }
        }
    }
}

pub use generated::vinzclortho::antientropy::v1 as antientropy_pb;
pub use generated::vinzclortho::coverage::v1 as coverage_pb;
pub use generated::vinzclortho::membership::v1 as membership_pb;
pub use generated::vinzclortho::replica::v1 as pb;
pub use generated::vinzclortho::transfer::v1 as transfer_pb;

/// Serialized descriptors of every service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vinzclortho_descriptor");

pub mod anti_entropy;
pub mod call_stream;
pub mod convert;
pub mod coverage;
pub mod forward;
pub mod identity;
pub mod membership;
pub mod observe;
pub mod peers;
pub mod replica_client;
pub mod replica_server;
pub mod server;
pub mod status;
pub mod tls;
pub mod transfer;
