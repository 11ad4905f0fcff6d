//! Generates a minimal FFI module for MIT libkrb5 from <krb5.h> and links it.

use std::env;
use std::path::PathBuf;

const FUNCTIONS: &[&str] = &[
    "krb5_init_context",
    "krb5_free_context",
    "krb5_cc_default",
    "krb5_cc_resolve",
    "krb5_cc_default_name",
    "krb5_cc_close",
    "krb5_cc_get_principal",
    "krb5_build_principal",
    "krb5_unparse_name",
    "krb5_get_credentials",
    "krb5_free_creds",
    "krb5_free_principal",
    "krb5_free_unparsed_name",
    "krb5_get_error_message",
    "krb5_free_error_message",
    "krb5_get_default_realm",
    "krb5_free_default_realm",
    "krb5_get_host_realm",
    "krb5_free_host_realm",
    "krb5_timeofday",
];

const TYPES: &[&str] = &[
    "krb5_creds",
    "krb5_keyblock",
    "krb5_data",
    "krb5_ticket_times",
    "krb5_context",
    "krb5_ccache",
    "krb5_principal",
    "krb5_const_principal",
    "krb5_timestamp",
    "krb5_error_code",
];

/// com_err codes used to classify failures.
const VARS: &[&str] = &[
    "KRB5_FCC_NOFILE",
    "KRB5_CC_NOTFOUND",
    "KRB5_CC_NOSUPP",
    "KRB5_CC_BADNAME",
    "KRB5_CC_FORMAT",
    "KRB5_CC_END",
    "KRB5_NO_TKT_SUPPLIED",
    "KRB5KRB_AP_ERR_TKT_EXPIRED",
    "KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN",
    "KRB5KRB_ERR_GENERIC",
    "KRB5_REALM_UNKNOWN",
    "KRB5_KDC_UNREACH",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/krb5_wrapper.h");

    let mut clang_args = Vec::new();
    match pkg_config::Config::new().probe("krb5") {
        Ok(lib) => {
            for p in lib.include_paths {
                clang_args.push(format!("-I{}", p.display()));
            }
        }
        Err(e) => {
            // Fall back to the usual MIT library names.
            println!(
                "cargo:warning=pkg-config krb5 failed ({e}); linking -lkrb5 -lk5crypto -lcom_err"
            );
            println!("cargo:rustc-link-lib=krb5");
            println!("cargo:rustc-link-lib=k5crypto");
            println!("cargo:rustc-link-lib=com_err");
        }
    }

    let mut builder = bindgen::Builder::default()
        .header("src/krb5_wrapper.h")
        .clang_args(&clang_args)
        .layout_tests(false)
        .generate_comments(false)
        .derive_default(true);
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed to generate krb5 bindings (is libkrb5-dev installed?)");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("krb5_sys.rs");
    bindings
        .write_to_file(out)
        .expect("failed to write krb5 bindings");
}
