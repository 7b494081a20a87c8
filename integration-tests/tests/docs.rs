//! The operator docs are run, not just written: every ```sh block of the quick start,
//! operations and troubleshooting pages runs on the hosts it names (see
//! `metalvpc_integration_tests::docs` for the few visible substitutions), in page order, on
//! one network of a supernode and four servers. A block that does not do what the page says
//! fails the test.

use metalvpc_integration_tests::docs::{blocks, DocLab};
use std::path::Path;

const RUN: &[&str] = &[
    "docs/quickstart.md",
    "docs/operations.md",
    "docs/troubleshooting.md",
];

#[test]
fn docs_quickstart_operations_troubleshooting() {
    const TEST: &str = "docs_quickstart_operations_troubleshooting";
    let Some(mut d) = DocLab::new(TEST, 4) else {
        return;
    };
    let mut n = 0;
    for page in RUN {
        n += d.run_page(page).len();
    }
    println!("[{TEST}] ran {n} command blocks of {}", RUN.join(", "));
    d.lab.assert_running();
}

/// Every ```sh block of every operator page either runs in the test above or names the test
/// that runs it (`covered-by=`), and that test exists.
#[test]
fn every_command_in_the_docs_is_run_by_a_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for page in [
        "docs/quickstart.md",
        "docs/operations.md",
        "docs/troubleshooting.md",
        "docs/configuration.md",
        "docs/install.md",
        "docs/kubernetes.md",
        "docs/security.md",
        "docs/signed-membership.md",
    ] {
        let Ok(text) = std::fs::read_to_string(root.join(page)) else {
            assert_ne!(page, "docs/quickstart.md", "missing {page}");
            continue;
        };
        let b = blocks(page, &text); // panics on a block nothing runs
        for block in b.iter().filter(|b| b.hosts.is_empty()) {
            let t = block.covered_by.as_deref().unwrap();
            let found = std::fs::read_dir(root.join("integration-tests/tests"))
                .unwrap()
                .flatten()
                .any(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|s| s.contains(&format!("fn {t}()")))
                });
            assert!(found, "{page}:{}: covered-by={t}: no such test", block.line);
        }
        if !RUN.contains(&page) {
            assert!(
                b.iter().all(|x| x.hosts.is_empty()),
                "{page} has host= blocks but is not in the run list"
            );
        }
        println!("{page}: {} command blocks, all run by a test", b.len());
    }
}
