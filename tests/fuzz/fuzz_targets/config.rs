//! The config parser: arbitrary text as a gateway's config file, parsed and validated
//! next to a dev kit (so that the files a valid config names are there), and as a
//! minimisation policy file.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A dev kit in a directory that lives as long as the process; the config path in it.
fn config_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("wijkpoort-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let addrs = wijkpoort::dev::devkit::Addresses {
            practice_api: addr(18001),
            practice_listener: addr(18002),
            wijkteam_api: addr(18003),
            wijkteam_listener: addr(18004),
        };
        let kit = wijkpoort::dev::devkit::write(&dir, addrs, None).expect("a dev kit");
        kit.practice_config
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = wijkpoort::Config::parse(text, config_path());
    let _ = wijkpoort::minimise::Policy::parse(text, "fuzz");
});
