//! The crate map of docs/architecture.md, enforced: each library crate may depend only on the
//! workspace crates below it, and the heavy I/O and presentation crates stay out of the layers
//! that must not pay for them. Reads `cargo metadata`, so a new dependency in any manifest is
//! caught by the suite, not by a reviewer.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// A library crate's rule: the workspace crates it may use, and external crates it must not.
struct Rule {
    krate: &'static str,
    ours_allowed: &'static [&'static str],
    forbidden: &'static [&'static str],
}

/// Presentation, serving and CLI crates: the trainer's business, never a library layer's.
const TRAINER_ONLY: &[&str] = &[
    "plotters",
    "png",
    "clap",
    "indicatif",
    "anyhow",
    "ctrlc",
    "crc32fast",
    "toml",
    "safetensors",
    "ndarray-npy",
];
/// File formats: the data layer's I/O behind its `io` feature, nobody else's.
const IO: &[&str] = &["arrow-array", "arrow-schema", "parquet", "csv"];

const RULES: &[Rule] = &[
    Rule {
        krate: "convcg-kernels",
        ours_allowed: &[],
        forbidden: &["ndarray", "serde"],
    },
    Rule {
        krate: "convcg-model",
        ours_allowed: &["convcg-kernels"],
        forbidden: &[],
    },
    Rule {
        krate: "convcg-eval",
        ours_allowed: &["convcg-kernels", "convcg-data"],
        forbidden: &[],
    },
    Rule {
        krate: "convcg-data",
        ours_allowed: &["convcg-kernels"],
        forbidden: &[],
    },
];

/// A normal (non-dev, non-build) dependency: its name, and whether a cargo feature turns it on.
struct Dep {
    name: String,
    optional: bool,
}

/// Each workspace package's normal dependencies.
fn normal_dependencies() -> BTreeMap<String, Vec<Dep>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("a package list");
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("a dependency list")
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| Dep {
                    name: d["name"].as_str().expect("a dependency name").to_owned(),
                    optional: d["optional"].as_bool().unwrap_or(false),
                })
                .collect();
            (p["name"].as_str().expect("a name").to_owned(), deps)
        })
        .collect()
}

#[test]
fn library_crates_depend_only_on_what_the_crate_map_allows() {
    let deps = normal_dependencies();
    let ours: Vec<&String> = deps.keys().filter(|n| n.starts_with("convcg")).collect();
    let mut breaches = Vec::new();
    for rule in RULES {
        let Some(uses) = deps.get(rule.krate) else {
            panic!("{} is not in the workspace", rule.krate);
        };
        for Dep { name, optional } in uses {
            let ours_not_allowed =
                ours.contains(&name) && !rule.ours_allowed.contains(&name.as_str());
            let external_not_allowed = [TRAINER_ONLY, rule.forbidden]
                .concat()
                .contains(&name.as_str());
            // File formats are the data layer's, and even there behind its `io` feature, so
            // that a crate wanting labels and batches does not compile them.
            let io_not_optional =
                IO.contains(&name.as_str()) && (rule.krate != "convcg-data" || !optional);
            if ours_not_allowed || external_not_allowed || io_not_optional {
                breaches.push(format!("{} -> {name}", rule.krate));
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "dependencies the crate map in docs/architecture.md forbids: {breaches:?}"
    );
}

#[test]
fn every_library_crate_has_a_rule() {
    let deps = normal_dependencies();
    for name in deps.keys().filter(|n| n.starts_with("convcg-")) {
        assert!(
            RULES.iter().any(|r| r.krate == name),
            "{name} has no rule in the layering test: add its row to docs/architecture.md and here"
        );
    }
}
