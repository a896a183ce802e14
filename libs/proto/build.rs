//! Compiles `proto/eventflow/v1/*.proto` into Rust (prost messages, tonic clients and servers)
//! and writes the file descriptor set that server reflection serves. The SubscriberService
//! server is compiled a second time for `src/wire.rs` (see there).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["cloudevent", "publisher", "subscriber", "admin", "dead_letter", "archive"]
        .map(|name| root.join(format!("eventflow/v1/{name}.proto")));
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let includes = std::slice::from_ref(&root);

    tonic_prost_build::configure().file_descriptor_set_path(out.join("eventflow_descriptor.bin")).compile_with_config(
        protoc_config()?,
        &files,
        includes,
    )?;

    // The SubscriberService server with `ReceivedEvent` mapped to a hand-written message that
    // carries the stored event bytes as field 2 (wire-identical to the embedded CloudEvent).
    let wire = out.join("wire");
    std::fs::create_dir_all(&wire)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&wire)
        .extern_path(".eventflow.v1.ReceivedEvent", "crate::wire::ReceivedEvent")
        .compile_with_config(protoc_config()?, &[root.join("eventflow/v1/subscriber.proto")], includes)?;

    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

/// A prost config using `$PROTOC` if set, else the vendored protoc.
fn protoc_config() -> Result<tonic_prost_build::Config, Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    match env::var_os("PROTOC") {
        Some(protoc) => config.protoc_executable(protoc),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    Ok(config)
}
