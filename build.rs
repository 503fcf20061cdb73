//! Links the library with `-z nodelete`: once loaded it is never unmapped, not even
//! when the Lua state that loaded it closes (Lua then `dlclose`s its C modules) while
//! a detached child thread still runs the library's code.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
