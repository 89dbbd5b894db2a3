//! Compiles proto/*.proto into Rust (tonic + prost) with a vendored protoc,
//! so no system protoc is needed, and writes the file descriptor set that
//! gRPC server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/replica.proto",
        "proto/membership.proto",
        "proto/transfer.proto",
        "proto/antientropy.proto",
        "proto/coverage.proto",
    ];
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: keys and values move between the
        // store, the wire and other nodes without a copy at each step.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("vinzclortho_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
