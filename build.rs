//! Builds the vendored libdeflate compressor (`vendor/libdeflate`, patched so a piece can
//! end without a final block) when the `libdeflate` feature is on; nothing otherwise.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=vendor/libdeflate");
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
