//! The example's Rust frontend: prints the package version it was linked with.

fn main() {
    // As vLLM's build-info crate: the version build_rust.py derived, else the crate's own.
    let version = match option_env!("VLLM_RS_BUILD_VERSION") {
        Some(version) => version,
        None => env!("CARGO_PKG_VERSION"),
    };
    match std::env::args().nth(1).as_deref() {
        Some("--version") => println!("vllm-rs {version}"),
        _ => println!("vllm-rs {version}: the example's Rust frontend"),
    }
}
