//! The generated code names only the crate-root items an application itself uses; everything
//! else goes through `::factum::__private`, so the root can change without breaking expansions.

use std::path::Path;

/// The names of `factum`'s root that generated code may use.
const ROOT: &[&str] = &[
    "Aggregate",
    "Command",
    "CommandSet",
    "Event",
    "EventSet",
    "Projection",
    "ProcessManager",
    "RecordedEvent",
    "BoxError",
    "SnapshotPolicy",
    "Effects",
    "__private",
];

/// Every `::factum::Name` in `text` whose `Name` is not in [`ROOT`].
fn unstable_paths(text: &str) -> Vec<String> {
    text.match_indices("::factum::")
        .map(|(at, m)| {
            text[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !ROOT.contains(&name.as_str()))
        .collect()
}

#[test]
fn snapshots_name_only_stable_root_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut found = Vec::new();
    for module in std::fs::read_dir(&root).expect("src is readable") {
        let snapshots = module.expect("a directory entry").path().join("snapshots");
        let Ok(entries) = std::fs::read_dir(&snapshots) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).expect("a snapshot is text");
            checked += 1;
            for name in unstable_paths(&text) {
                found.push(format!("{}: ::factum::{name}", path.display()));
            }
        }
    }
    assert!(
        checked > 10,
        "found only {checked} snapshots under {}",
        root.display()
    );
    assert!(
        found.is_empty(),
        "unstable root paths:\n{}",
        found.join("\n")
    );
}

#[test]
fn finds_unstable_paths() {
    assert_eq!(
        unstable_paths("::factum::Payload ::factum::__private::Payload ::factum::Effects::none"),
        ["Payload"]
    );
}
