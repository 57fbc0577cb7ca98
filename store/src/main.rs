//! The `secret-store` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    secret_store::run_cli()
}
