//! Reading a config file as its user wrote it. An error names the file, the line and the dotted
//! key, shows the line, and says what the key takes in a user's words ("a whole number", "a
//! number") rather than Rust's (`usize`, `f64`); an unknown key that belongs to another section
//! names that section, and a misspelt one the nearest key.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

/// `text`, the config file `origin`, deserialised as a `T`. `keys` are the valid keys of the
/// whole run configuration, dotted (`train.epochs`), for the hints of unknown keys.
///
/// # Errors
/// If `text` is not TOML or does not deserialise as a `T`; the message is described above.
pub(crate) fn parse<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    keys: &[String],
) -> anyhow::Result<T> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| anyhow::anyhow!(located(text, origin, e.span(), None, e.message())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let key = (path != "." && path != "?").then_some(path);
        let inner = e.inner();
        // An unknown key's path ends with the key itself: the table it is in is the rest.
        let parent = key
            .as_deref()
            .and_then(|k| k.rsplit_once('.'))
            .map(|(p, _)| p);
        let message = describe(inner.message(), parent, keys);
        anyhow::anyhow!(located(
            text,
            origin,
            inner.span(),
            key.as_deref(),
            &message
        ))
    })
}

/// `origin, line N, key `k`: message`, then the line itself when the span gives one.
fn located(
    text: &str,
    origin: &str,
    span: Option<std::ops::Range<usize>>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = origin.to_owned();
    let mut shown = None;
    if let Some(span) = span.filter(|s| s.start <= text.len()) {
        let line = text[..span.start].matches('\n').count() + 1;
        out.push_str(&format!(", line {line}"));
        shown = text.lines().nth(line - 1).map(|l| (line, l.trim_end()));
    }
    // The message of an unknown key names it and its table.
    if let Some(key) = key.filter(|_| !message.starts_with("unknown key")) {
        out.push_str(&format!(", key `{key}`"));
    }
    out.push_str(": ");
    out.push_str(message);
    if let Some((n, line)) = shown {
        out.push_str(&format!("\n  {n} | {line}"));
    }
    out
}

/// serde's message in a user's words, with a hint for an unknown key (in the table `parent`).
fn describe(message: &str, parent: Option<&str>, keys: &[String]) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return unknown_key(name, parent, keys);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return format!(
                "expected {}, found {}",
                type_words(expected),
                found_words(found)
            );
        }
    }
    type_words(message)
}

/// The hint for `name`, unknown in the table `parent` (the top level when `None`): the sections
/// that hold a key of that name, else the nearest key of the same table.
fn unknown_key(name: &str, parent: Option<&str>, keys: &[String]) -> String {
    let here = match parent {
        Some(p) => format!("[{p}]"),
        None => "the top level".to_owned(),
    };
    let mut out = format!("unknown key `{name}` in {here}");
    let homes: Vec<String> = keys
        .iter()
        .filter_map(|k| match k.rsplit_once('.') {
            Some((table, leaf)) if leaf == name => Some(format!("[{table}]")),
            None if k == name => Some("the top level (before any [section])".to_owned()),
            _ => None,
        })
        .collect();
    if !homes.is_empty() {
        out.push_str(&format!(": `{name}` belongs in {}", homes.join(" or ")));
        return out;
    }
    let siblings = keys
        .iter()
        .filter_map(|k| match (k.rsplit_once('.'), parent) {
            (Some((table, leaf)), Some(p)) if table == p => Some(leaf),
            (None, None) => Some(k.as_str()),
            _ => None,
        });
    let nearest = siblings
        .map(|leaf| (edit_distance(name, leaf), leaf))
        .filter(|&(d, leaf)| d <= 2.max(leaf.len() / 4))
        .min();
    if let Some((_, leaf)) = nearest {
        out.push_str(&format!(": did you mean `{leaf}`?"));
    }
    out.push_str(" (`convcg config` prints every key)");
    out
}

/// serde's name of an expected type in a user's words.
fn type_words(text: &str) -> String {
    // Longest names first, so that `u8` does not eat the start of `u64`.
    const WORDS: [(&str, &str); 12] = [
        ("usize", "a whole number (0 or more)"),
        ("isize", "a whole number"),
        ("u64", "a whole number (0 or more)"),
        ("u32", "a whole number (0 or more)"),
        ("u16", "a whole number (0 or more)"),
        ("u8", "a whole number (0 or more)"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("a boolean", "true or false"),
        ("a sequence", "a list"),
    ];
    let mut out = text.to_owned();
    for (rust, user) in WORDS {
        out = out.replace(rust, user);
    }
    // `struct ClickWeight`: a table, whatever the type's name.
    while let Some(at) = out.find("struct ") {
        let name_end = out[at + 7..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(out.len(), |n| at + 7 + n);
        out.replace_range(at..name_end, "a table");
    }
    out
}

/// serde's description of a found value (`string "x"`, `integer `-3``) in a user's words.
fn found_words(found: &str) -> String {
    let literal = |s: &str| s.trim_matches('`').to_owned();
    if let Some(s) = found.strip_prefix("string ") {
        format!("the text {s}")
    } else if let Some(s) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        literal(s)
    } else if let Some(s) = found.strip_prefix("boolean ") {
        literal(s)
    } else {
        found.to_owned()
    }
}

/// Levenshtein distance, for the nearest key to a misspelt one.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Every leaf of a TOML value as its dotted key and its value written as TOML.
pub(crate) fn leaves(value: &toml::Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("history_len", "history_len"), 0);
        assert_eq!(edit_distance("histroy_len", "history_len"), 2);
        assert_eq!(edit_distance("epoch", "epochs"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            describe("invalid type: string \"seven\", expected usize", None, &[]),
            "expected a whole number (0 or more), found the text \"seven\""
        );
        assert_eq!(
            describe("invalid type: string \"x\", expected f64", None, &[]),
            "expected a number, found the text \"x\""
        );
        assert_eq!(
            describe("invalid value: integer `-3`, expected u64", None, &[]),
            "expected a whole number (0 or more), found -3"
        );
    }
}
