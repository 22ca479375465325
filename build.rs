//! Link layout of the shipped build (x86-64 musl, release).
//!
//! The kernel maps a program's code in 64 KiB windows around each page it runs, so code
//! spread over the whole binary makes almost all of it resident: an idle watchdog held
//! 2.1 of its 2.2 MiB of code while running 0.6 MiB of it. Linked with rust-lld (shipped
//! with every rustup toolchain) and `link/x86_64-musl.order` — the functions a start, a
//! health check, a request and a metrics scrape run, listed by `bench/link-order` — those
//! functions sit together and the rest stays on disk until used: about 1.1 MiB less
//! memory per idle watchdog and fewer page faults at start. A function the list does not
//! name (new code, another toolchain) is linked after the listed ones, so a stale list
//! costs memory, never correctness; `bench/link-order --check` tells when it is stale.
//! Other targets and profiles link as before.

use std::path::PathBuf;
use std::process::Command;

const ORDER: &str = "link/x86_64-musl.order";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=FWATCHDOG_LINK_MAP");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("TARGET") != "x86_64-unknown-linux-musl" || var("PROFILE") != "release" {
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // The `ld.lld` the C compiler driver finds with -B: rust-lld under the name it answers to.
    let gcc_ld = PathBuf::from(sysroot)
        .join("lib/rustlib")
        .join(var("HOST"))
        .join("bin/gcc-ld");
    if !gcc_ld.join("ld.lld").exists() {
        println!(
            "cargo:warning=rust-lld not found ({}): linking without {ORDER}; an idle watchdog then holds about 1 MiB more",
            gcc_ld.display()
        );
        return;
    }
    let order = PathBuf::from(var("CARGO_MANIFEST_DIR")).join(ORDER);
    let mut args = vec![
        "-fuse-ld=lld".to_owned(),
        format!("-B{}", gcc_ld.display()),
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        // Names the list has and this build lacks are expected after any change.
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    // bench/link-order asks for the link map: where each function landed.
    let map = var("FWATCHDOG_LINK_MAP");
    if !map.is_empty() {
        args.push(format!("-Wl,-Map={map}"));
    }
    for arg in args {
        println!("cargo:rustc-link-arg-bin=fwatchdog={arg}");
    }
}
