//! Generates the `fulcrum.v1` messages and services into OUT_DIR, plus a descriptor set
//! for gRPC reflection. Uses the protoc shipped in `protoc-bin-vendored`, so building
//! needs no protoc on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; prost-build reads PROTOC.
    // `set_var` is unsafe in edition 2024 because other threads could read the
    // environment; a build script has none, but we avoid it anyway by passing the path.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "fulcrum/v1/resources.proto",
        "fulcrum/v1/discovery.proto",
        "fulcrum/v1/admin.proto",
        "fulcrum/v1/telemetry.proto",
        "fulcrum/v1/logs.proto",
        "fulcrum/v1/security.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("fulcrum_descriptor.bin"))
        .compile_with_config(config, &files, &["."])?;
    Ok(())
}
