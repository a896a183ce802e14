//! The eventflow.v1 gRPC API: generated messages, clients and servers, and the encoded file
//! descriptor set for server reflection.

/// Generated code of package `eventflow.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
    tonic::include_proto!("eventflow.v1");
}

/// The encoded `FileDescriptorSet` of every eventflow proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("eventflow_descriptor");

pub use prost;
pub use prost_types;

pub mod convert;
pub mod json;
pub mod validate;
pub mod wire;
