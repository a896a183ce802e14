//! Compiles `proto/eventflow/v1/*.proto` into Rust (prost messages, tonic clients and servers)
//! and writes the file descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["cloudevent", "publisher", "subscriber", "admin", "dead_letter"]
        .map(|name| root.join(format!("eventflow/v1/{name}.proto")));
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    match env::var_os("PROTOC") {
        Some(protoc) => config.protoc_executable(protoc),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    tonic_prost_build::configure().file_descriptor_set_path(out.join("eventflow_descriptor.bin")).compile_with_config(
        config,
        &files,
        std::slice::from_ref(&root),
    )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
