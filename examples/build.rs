//! Compiles `proto/hello.proto` into the `registry_examples::proto` module.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hello.proto");
    tonic_prost_build::compile_protos("proto/hello.proto")?;
    Ok(())
}
