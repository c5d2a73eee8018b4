//! A configuration written as TOML with each key's meaning and allowed values as comments above
//! it (`convcg config`). The words come from the config types' own doc comments, through their
//! JSON schema (schemars), so they cannot drift from the code.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::RunConfig;

/// Width of the comment lines.
const WIDTH: usize = 96;

/// `cfg` as TOML: top-level keys, then each section under its header, every key preceded by its
/// meaning and what it accepts, and by `notes[key]` (a dotted key) where there is one.
pub(crate) fn commented_toml(
    cfg: &RunConfig,
    notes: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let schema = SchemaSettings::default()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<RunConfig>();
    let table = toml::Table::try_from(cfg)?;
    let mut out = String::new();
    write_table(&mut out, "", &table, schema.as_value(), notes);
    Ok(out)
}

fn write_table(
    out: &mut String,
    path: &str,
    table: &toml::Table,
    schema: &Value,
    notes: &BTreeMap<String, String>,
) {
    let property = |key: &str| schema.pointer(&format!("/properties/{key}"));
    let dotted = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    for (key, value) in table.iter().filter(|(_, v)| !v.is_table()) {
        let key_schema = property(key).unwrap_or(&Value::Null);
        write_comment(out, description(key_schema));
        write_comment(out, Some(&format!("Takes {}.", accepts(key_schema))));
        if let Some(note) = notes.get(&dotted(key)) {
            write_comment(out, Some(&format!("({note})")));
        }
        let _ = writeln!(out, "{key} = {value}\n");
    }
    for (key, value) in table {
        if let toml::Value::Table(sub) = value {
            let key_schema = property(key).unwrap_or(&Value::Null);
            write_comment(out, description(key_schema));
            let _ = writeln!(out, "[{}]", dotted(key));
            write_table(out, &dotted(key), sub, key_schema, notes);
        }
    }
}

/// A schema's description (the doc comment), without rustdoc's link brackets.
fn description(schema: &Value) -> Option<&str> {
    schema.get("description").and_then(Value::as_str)
}

/// `text` as `# ` comment lines of at most [`WIDTH`] columns, one paragraph per blank line in
/// it; rustdoc links (`` [`X`] ``, `` [`x`](path) ``) lose their brackets and targets.
fn write_comment(out: &mut String, text: Option<&str>) {
    let Some(text) = text else { return };
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str("#\n");
        }
        let mut line = String::from("#");
        for word in unlinked(paragraph).split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
}

/// `text` with `[label](target)` written as `label` and `[label]` as `label`.
fn unlinked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("[`") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find("`]") else {
            out.push_str(&rest[open..]);
            return out;
        };
        out.push_str(&after[..close + 1]);
        rest = &after[close + 2..];
        if rest.starts_with('(')
            && let Some(end) = rest.find(')')
        {
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// What a key of this schema accepts, in a user's words.
fn accepts(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return one_of(values.iter());
    }
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        let consts: Vec<&Value> = variants.iter().filter_map(|v| v.get("const")).collect();
        if consts.len() == variants.len() {
            return one_of(consts.into_iter());
        }
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let words: Vec<String> = options.iter().map(accepts).collect();
        return words.join(" or ");
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any"),
        _ => "any",
    };
    match kind {
        "integer" => match schema.get("minimum").and_then(Value::as_f64) {
            Some(min) if min >= 0.0 => "a whole number, 0 or more".to_owned(),
            _ => "a whole number".to_owned(),
        },
        "number" => "a number".to_owned(),
        "boolean" => "true or false".to_owned(),
        "string" => "text".to_owned(),
        "array" => {
            let items = schema
                .get("items")
                .map_or("values".to_owned(), |i| plural(&accepts(i)));
            match (schema.get("minItems"), schema.get("maxItems")) {
                (Some(a), Some(b)) if a == b => format!("a list of {a} {items}"),
                _ => format!("a list of {items}"),
            }
        }
        "object" => "a table".to_owned(),
        _ => "a value".to_owned(),
    }
}

fn one_of<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    let names: Vec<String> = values.map(Value::to_string).collect();
    format!("one of {}", names.join(", "))
}

/// "a whole number, 0 or more" → "whole numbers, 0 or more"; "a number" → "numbers".
fn plural(one: &str) -> String {
    let bare = one.strip_prefix("a ").unwrap_or(one);
    match bare.split_once(',') {
        Some((head, tail)) => format!("{head}s,{tail}"),
        None => format!("{bare}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_lose_their_brackets_and_targets() {
        assert_eq!(
            unlinked("see [`EvalProtocol`] and [`seq`](super::QueryKey::seq), [x]"),
            "see `EvalProtocol` and `seq`, [x]"
        );
    }

    #[test]
    fn every_key_of_the_defaults_is_commented_and_reads_back() {
        let cfg = RunConfig::default();
        let text = commented_toml(&cfg, &BTreeMap::new()).unwrap();
        assert_eq!(RunConfig::from_toml(&text).unwrap(), cfg);
        let lines: Vec<&str> = text.lines().collect();
        let mut keys = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
                continue;
            }
            keys += 1;
            assert!(
                i >= 2 && lines[i - 1].starts_with("# Takes ") && lines[i - 2].starts_with('#'),
                "{line} has no meaning and allowed values above it:\n{}",
                lines[i.saturating_sub(3)..=i].join("\n")
            );
        }
        assert!(keys > 100, "{keys} keys");
        assert!(
            text.contains("# Takes one of \"time\", \"last_conversion\", \"none\"."),
            "{text}"
        );
        assert!(text.contains("[data.click_weight]"));
        assert!(
            text.contains("# Takes a number or text.\nclick_window_days = "),
            "{text}"
        );
        assert!(!text.contains("[`"), "rustdoc links left in:\n{text}");
    }
}
