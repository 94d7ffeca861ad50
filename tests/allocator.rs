//! The operator binary allocates with jemalloc and the options src/main.rs sets (a
//! background thread handing freed pages back after 1 s): jemalloc's own statistics,
//! printed at exit when `_RJEM_MALLOC_CONF=stats_print:true`, say which options are in
//! force. With glibc's allocator nothing is printed and this fails.

#[test]
fn the_operator_allocates_with_jemalloc_and_its_decay_options() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vaultsync"))
        .arg("crd")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run vaultsync crd");
    assert!(out.status.success(), "{out:?}");
    let stats = String::from_utf8_lossy(&out.stderr);
    for option in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(
            stats.contains(option),
            "{option} is not in jemalloc's statistics:\n{stats}"
        );
    }
}
