//! Keeps `protocol/` sans-IO: its non-test code opens no socket, reads no clock, spawns no
//! thread, takes no lock and reads no OS entropy, and the two state machines (`edge`,
//! `supernode`) draw every random value from the generator their shell passed in.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The file's code before its `#[cfg(test)]` module (tests may use real time and keys).
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    // Comments may name what the code must not do.
    code.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_core_does_no_io_and_reads_no_clock_or_entropy() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "found the sources");
    let forbidden = [
        "Instant::now",
        "SystemTime",
        "UdpSocket",
        "TcpStream",
        "TcpListener",
        "std::thread",
        "Mutex",
        "RwLock",
        "std::fs",
        "tokio",
    ];
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if rel == "sim.rs" || rel.starts_with("sim/") {
            continue; // the simulator is a test module
        }
        let code = non_test_code(f);
        for word in forbidden {
            if code.contains(word) {
                problems.push(format!("{rel}: uses {word}"));
            }
        }
        // OS entropy enters through `rng::os_seed` only, for tools (`genkey`) and tests.
        if rel != "rng.rs" && code.contains("getrandom") {
            problems.push(format!("{rel}: reads OS entropy (getrandom)"));
        }
        // The state machines use the generator they were given, never the OS-seeded helpers.
        let core = rel.starts_with("edge") || rel.starts_with("supernode") || rel == "cookie.rs";
        for helper in [
            "os_seed",
            "from_os",
            "::generate()",
            "Handshake::initiate(",
            "Handshake::respond(",
        ] {
            if core && code.contains(helper) {
                problems.push(format!("{rel}: calls {helper} (use the core's Rng)"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "sans-IO violations:\n{}",
        problems.join("\n")
    );
}
