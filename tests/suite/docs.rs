//! docs/data-format.md against the code: every identifier in its inline code is a column of its
//! tables, a config key or a value the config accepts, every `[section] key` it names exists,
//! and its Configuration table lists every `[data]` key with the run's default.

use std::collections::{BTreeMap, BTreeSet};

use convcg::RunConfig;

const DOC: &str = include_str!("../../docs/data-format.md");

/// The run configuration's keys with their default values, dotted from the top.
fn config_keys() -> BTreeMap<String, toml::Value> {
    RunConfig::default()
        .key_values()
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let parsed: toml::Table = toml::from_str(&format!("v = {v}")).unwrap();
            (k, parsed["v"].clone())
        })
        .collect()
}

/// The contents of the doc's inline code spans (outside fenced blocks).
fn code_spans() -> Vec<&'static str> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in DOC.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        spans.extend(line.split('`').skip(1).step_by(2));
    }
    spans
}

/// The section of the doc under `## {title}`.
fn section(title: &str) -> &'static str {
    let start = DOC
        .find(&format!("## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title}"));
    let rest = &DOC[start + 3..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn every_identifier_in_the_data_format_doc_is_a_column_key_or_value() {
    let keys = config_keys();
    let mut known: BTreeSet<String> = keys
        .keys()
        .flat_map(|k| k.split('.').map(str::to_owned))
        .collect();
    // The tables' columns: the second cell of each row of the Tables section.
    for row in section("Tables").lines().filter(|l| l.starts_with('|')) {
        if let Some(cell) = row.split('|').nth(2) {
            known.extend(
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|c| c.trim_end_matches('?').trim_end_matches('*').to_owned()),
            );
        }
    }
    // Values of enumerations the doc names, each checked to be accepted by its key.
    let values = [("eval_protocol", "last_conversion"), ("log_q", "streaming")];
    for (key, value) in values {
        RunConfig::from_toml(&format!("[data]\n{key} = \"{value}\"\n")).unwrap();
        known.insert(value.to_owned());
    }
    // Other engines' functions, arguments and file names, quoted where the doc says how to
    // write the tables from them.
    known.extend(
        [
            "epoch_ms",
            "unix_timestamp",
            "to_unixtime",
            "write_to_dataset",
            "partition_cols",
            "data_0",
            "data_1",
        ]
        .map(str::to_owned),
    );
    let mut unknown = BTreeSet::new();
    for span in code_spans() {
        let words = span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in
            words.filter(|w| w.contains('_') && w.starts_with(|c: char| c.is_ascii_lowercase()))
        {
            if !known.contains(word) {
                unknown.insert(word.to_owned());
            }
        }
        // `[data] key` and `[data.click_weight] key` name a key of that section.
        if let Some(rest) = span.strip_prefix('[')
            && let Some((table, tail)) = rest.split_once("] ")
        {
            let key = tail.split_whitespace().next().unwrap_or("");
            assert!(
                keys.contains_key(&format!("{table}.{key}")),
                "`{span}`: there is no key `{key}` in [{table}]"
            );
        }
    }
    assert!(
        unknown.is_empty(),
        "names in docs/data-format.md that the code does not know: {unknown:?}"
    );
}

#[test]
fn the_configuration_table_lists_every_data_key_with_its_default() {
    let keys = config_keys();
    let data: BTreeMap<&str, &toml::Value> = keys
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("data.")?, v)))
        .collect();
    let mut listed = BTreeMap::new();
    for row in section("Configuration")
        .lines()
        .filter(|l| l.starts_with("| `"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`');
        let default = cells[2].trim_matches('`');
        listed.insert(key, default);
    }
    let missing: Vec<&&str> = data.keys().filter(|k| !listed.contains_key(*k)).collect();
    let extra: Vec<&&str> = listed.keys().filter(|k| !data.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not listed: {missing:?}; not keys: {extra:?}"
    );
    for (key, written) in listed {
        let parsed: toml::Table = toml::from_str(&format!("v = {written}"))
            .unwrap_or_else(|e| panic!("{key}: default `{written}` is not TOML: {e}"));
        let (doc, code) = (&parsed["v"], data[key]);
        let same = match (
            doc.as_float().or(doc.as_integer().map(|i| i as f64)),
            code.as_float().or(code.as_integer().map(|i| i as f64)),
        ) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            _ => doc == code,
        };
        assert!(
            same,
            "[data] {key}: the doc says {written}, the code {code}"
        );
    }
}

/// Words a user of the README's commands cannot know: the benchmark workloads' names and the
/// comparison peers belong to docs/performance.md.
const JARGON: [&str; 5] = ["W1", "W2", "W3", "peer", "seed's"];

/// Whether `text` holds `word` as a word (not inside a longer one).
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        boundary(before) && (boundary(after) || after == Some('s'))
    })
}

/// The README's commands table and every command's `--help` use only words the README
/// defines: no workload names or peers, and "the source paper" only as the README defines it.
#[test]
fn readme_commands_and_help_use_no_undefined_words() {
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains("called **the source paper**"),
        "the README defines the source paper"
    );
    let start = readme.find("## Commands\n").expect("a Commands section");
    let rest = &readme[start + 3..];
    let table = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let help = |args: &[&str]| {
        let out = crate::support::succeed(crate::support::convcg().args(args).arg("--help"));
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&[]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 12, "{commands:?} from:\n{top}");
    let mut texts = vec![("the README's commands table".to_owned(), table.to_owned())];
    texts.push(("convcg --help".to_owned(), top));
    for c in &commands {
        texts.push((format!("convcg {c} --help"), help(&[c.as_str()])));
    }
    for (place, text) in &texts {
        for word in JARGON {
            assert!(!has_word(text, word), "{place} says {word:?}:\n{text}");
        }
    }
}
