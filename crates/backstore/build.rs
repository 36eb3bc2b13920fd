//! Builds the rbd backstore's C++ shim (src/rbd/shim.cc: librbd's C++
//! `aio_write`, which can take the write's buffer without copying it) as a
//! small shared object that `rbd::shim` embeds and loads at run time, so the
//! rtarget binary itself still links nothing of Ceph (rbd/ffi.rs says why).
//! Only where librbd's C++ headers are installed (librbd-dev and
//! libradospp-dev); elsewhere the build goes on without it (with a warning)
//! and writes take librbd's C call, which copies the buffer.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rbd_shim)");
    println!("cargo::rerun-if-changed=src/rbd/shim.cc");
    println!("cargo::rerun-if-env-changed=RTARGET_NO_RBD_SHIM");
    let headers = ["/usr/include/rbd/librbd.hpp", "/usr/include/rados/buffer.h"];
    for h in headers {
        println!("cargo::rerun-if-changed={h}");
    }
    if std::env::var_os("RTARGET_NO_RBD_SHIM").is_some() {
        return;
    }
    if let Some(missing) = headers.iter().find(|h| !Path::new(h).exists()) {
        println!(
            "cargo::warning=rbd: {missing} not found (librbd-dev, libradospp-dev): \
             RBD writes copy their buffer"
        );
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let so = out.join("librtarget_rbd_shim.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Werror"])
        .args(["-Wl,--no-undefined", "-Wl,-soname,librtarget_rbd_shim.so"])
        .arg("src/rbd/shim.cc")
        .arg("-o")
        .arg(&so)
        .args(["-lrbd", "-lrados"])
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo::rustc-cfg=rbd_shim");
            println!("cargo::rustc-env=RTARGET_RBD_SHIM={}", so.display());
        }
        other => println!("cargo::warning=rbd: the C++ shim did not build ({other:?}): RBD writes copy their buffer"),
    }
}
