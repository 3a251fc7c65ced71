//! Links the `ferry` client as a position-dependent executable on Linux.
//!
//! A client runs once per command, and `ferry run -- true` is measured against a "hello world"
//! exec: most of what the client's start cost beyond that was the dynamic loader applying
//! some 20 000 relative relocations to a position-independent image (`readelf -r`), and the
//! pages they touch. Linked with `-no-pie` the image needs about 200 and starts ~0.15 ms
//! sooner (docs/performance.md). The client gives up ASLR of its own image (not of its
//! libraries, stack or heap) for that: it lives for one command, serves no one, and reads what
//! a daemon sends with checked decoders in safe Rust. The daemon, `ferryd`, long-lived and
//! facing the network, stays a PIE with full RELRO (rustc's defaults).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux {
        println!("cargo::rustc-link-arg-bin=ferry=-no-pie");
    }
}
