//! The `kms-plugin` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    kms_plugin::main()
}
