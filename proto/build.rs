//! Compiles the .proto files with protox (pure Rust, no `protoc` needed) and
//! generates prost messages and tonic services from the descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kms/v2/api.proto",
        "proto/kms/v1beta1/api.proto",
        "proto/envelope/v2/encrypted_object.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Deterministic encoding: map entries in key order.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
