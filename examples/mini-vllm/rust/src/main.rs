//! The example's Rust frontend: prints the package version it was linked with.

fn main() {
    // build_rust.py passes the version the wheel will carry (setuptools-scm's, or a pretend one).
    let version = option_env!("VLLM_RS_VERSION").unwrap_or("unknown");
    match std::env::args().nth(1).as_deref() {
        Some("--version") => println!("vllm-rs {version}"),
        _ => println!("vllm-rs {version}: the example's Rust frontend"),
    }
}
