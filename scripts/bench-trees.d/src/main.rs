//! One upstream search answer through what a search does to its tree, in three trees (issue 18):
//!
//!     bench-trees ANSWER.json [ROUNDS]
//!
//! - `serde_json::Value`, parsed as the gateway parses an answer it opens
//!   (`fhirseal_seal::parse_for_reader`): an `IndexMap` per object, a `String` per string; and
//!   written by the gateway's own writer (`fhirseal_fhir::json_text`);
//! - the parse benchmark's borrowed tree (`crates/seal/benches/borrowed.rs`): strings borrowed
//!   from the input, objects as lists of members; written by `serde_json`'s serializer;
//! - `sonic_rs::Value`, whose parser is several times faster than `serde_json`'s, walked two ways:
//!   descending with `&mut` through every object, as the gateway's open walk does, and finding the
//!   sealed elements first, then reaching each one by its path.
//!
//! The steps are a search's, made small: parse the answer; walk it for every sealed-element
//! envelope (as `fhirseal_seal::headers` looks for the headers to fetch); "open" it (each object
//! holding a sealed-element extension loses its `extension` and gains a member, as an opened
//! element replaces its placeholder); write it; drop it. No cryptography: only the tree's part.
//! Every tree's written answer is checked to read back as the same JSON as `serde_json`'s.
//!
//! Each figure is the least, over ROUNDS rounds (default 40), of the mean of 50 calls, in µs;
//! every call ends with its tree dropped, so each column holds the drop.
//! Run by `scripts/bench-trees`, which finds a recorded answer and builds this.

use std::borrow::Cow;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait};

#[path = "../../../crates/seal/benches/borrowed.rs"]
mod borrowed;

use borrowed::Tree;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEALED_ELEMENT: &str = "https://fhirseal.dev/fhir/StructureDefinition/sealed-element";
const CALLS: u32 = 50;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), rounds) = (args.next(), args.next()) else {
        eprintln!("usage: bench-trees ANSWER.json [ROUNDS]");
        return ExitCode::from(64);
    };
    let rounds = match rounds.map(|r| r.parse::<u32>()) {
        None => 40,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => {
            eprintln!("bench-trees: ROUNDS is a whole number >= 1");
            return ExitCode::from(64);
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("bench-trees: {path}: {e}");
            return ExitCode::from(66);
        }
    };
    match run(&bytes, rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-trees: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(bytes: &[u8], rounds: u32) -> Result<(), String> {
    let expected = written_by_serde(bytes)?;
    let envelopes = envelopes_value(&fhirseal_seal::parse_for_reader(bytes).map_err(s)?);
    if envelopes == 0 {
        return Err("the answer holds no sealed element: not a sealed search answer".into());
    }
    check("the borrowed tree", &expected, &written_by_tree(bytes)?)?;
    check(
        "sonic_rs::Value, `&mut` descent",
        &expected,
        &written_by_sonic(bytes, Open::Descend)?,
    )?;
    check(
        "sonic_rs::Value, by paths",
        &expected,
        &written_by_sonic(bytes, Open::ByPaths)?,
    )?;

    println!(
        "{} bytes, {envelopes} sealed elements; µs a call (each ends with the tree dropped), the least of {rounds} rounds of {CALLS} calls\n",
        bytes.len()
    );
    println!("| tree | parse | parse, walk | parse, open | parse, walk, open, write |");
    println!("|---|---|---|---|---|");
    let value = [
        time(rounds, || fhirseal_seal::parse_for_reader(bytes).map(drop)),
        time(rounds, || {
            fhirseal_seal::parse_for_reader(bytes).map(|v| envelopes_value(&v))
        }),
        time(rounds, || {
            fhirseal_seal::parse_for_reader(bytes).map(|mut v| open_value(&mut v))
        }),
        time(rounds, || written_by_serde(bytes).map(|w| w.len())),
    ];
    row(
        "`serde_json::Value` (`parse_for_reader`, the gateway's)",
        &value,
    );
    let tree = [
        time(rounds, || {
            serde_json::from_slice::<Tree<'_>>(bytes).map(drop)
        }),
        time(rounds, || {
            serde_json::from_slice::<Tree<'_>>(bytes).map(|t| envelopes_tree(&t))
        }),
        time(rounds, || {
            serde_json::from_slice::<Tree<'_>>(bytes).map(|mut t| open_tree(&mut t))
        }),
        time(rounds, || written_by_tree(bytes).map(|w| w.len())),
    ];
    row("borrowed tree (`benches/borrowed.rs`)", &tree);
    let sonic = |open: Open| {
        [
            time(rounds, || {
                sonic_rs::from_slice::<sonic_rs::Value>(bytes).map(drop)
            }),
            time(rounds, || {
                sonic_rs::from_slice::<sonic_rs::Value>(bytes).map(|v| envelopes_sonic(&v))
            }),
            time(rounds, || {
                sonic_rs::from_slice::<sonic_rs::Value>(bytes).map(|mut v| open_sonic(&mut v, open))
            }),
            time(rounds, || written_by_sonic(bytes, open).map(|w| w.len())),
        ]
    };
    row(
        "`sonic_rs::Value`, opened descending with `&mut`",
        &sonic(Open::Descend),
    );
    row(
        "`sonic_rs::Value`, opened by paths found first",
        &sonic(Open::ByPaths),
    );

    // What a tree does with a repeated member name, which a policy decision must read as the
    // client will (serde_json, JavaScript and Python keep the last).
    let repeated = br#"{"a":1,"a":2}"#;
    let value: Value = serde_json::from_slice(repeated).map_err(s)?;
    let tree: Tree<'_> = serde_json::from_slice(repeated).map_err(s)?;
    let sonic: sonic_rs::Value = sonic_rs::from_slice(repeated).map_err(s)?;
    println!(
        "\n`{{\"a\":1,\"a\":2}}`: `serde_json::Value` reads a = {} and writes {}; the borrowed tree writes {}; `sonic_rs::Value` reads a = {} and writes {}.",
        value["a"],
        value,
        serde_json::to_string(&tree).map_err(s)?,
        sonic
            .get("a")
            .map_or_else(|| "nothing".into(), ToString::to_string),
        sonic_rs::to_string(&sonic).map_err(s)?
    );
    Ok(())
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The least mean time of one call, in µs; the result is kept from the optimiser.
fn time<T, E: std::fmt::Debug>(rounds: u32, mut f: impl FnMut() -> Result<T, E>) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..CALLS {
            black_box(f().expect("checked before timing"));
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(CALLS));
    }
    best * 1e6
}

fn row(name: &str, figures: &[f64; 4]) {
    let [parse, walk, open, all] = figures;
    println!("| {name} | {parse:.0} | {walk:.0} | {open:.0} | {all:.0} |");
}

fn check(name: &str, expected: &[u8], written: &[u8]) -> Result<(), String> {
    let a: Value = serde_json::from_slice(expected).map_err(s)?;
    let b: Value = serde_json::from_slice(written).map_err(s)?;
    if a == b {
        Ok(())
    } else {
        Err(format!(
            "{name} wrote another answer than serde_json::Value"
        ))
    }
}

// --- serde_json::Value ---

fn written_by_serde(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut value = fhirseal_seal::parse_for_reader(bytes).map_err(s)?;
    black_box(envelopes_value(&value));
    open_value(&mut value);
    Ok(fhirseal_fhir::json_text(&value).into_bytes())
}

fn envelopes_value(value: &Value) -> usize {
    match value {
        Value::Object(object) => {
            let sealed = object.get("url").and_then(Value::as_str) == Some(SEALED_ELEMENT)
                && object
                    .get("valueBase64Binary")
                    .is_some_and(Value::is_string);
            usize::from(sealed) + object.values().map(envelopes_value).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(envelopes_value).sum(),
        _ => 0,
    }
}

fn holds_envelope_value(extension: &Value) -> bool {
    extension.as_array().is_some_and(|list| {
        list.iter()
            .any(|e| e.get("url").and_then(Value::as_str) == Some(SEALED_ELEMENT))
    })
}

fn open_value(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("extension").is_some_and(holds_envelope_value) {
                object.shift_remove("extension");
                object.insert("opened".into(), Value::Bool(true));
            }
            object.values_mut().for_each(open_value);
        }
        Value::Array(items) => items.iter_mut().for_each(open_value),
        _ => {}
    }
}

// --- the borrowed tree ---

fn written_by_tree(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut tree: Tree<'_> = serde_json::from_slice(bytes).map_err(s)?;
    black_box(envelopes_tree(&tree));
    open_tree(&mut tree);
    serde_json::to_vec(&tree).map_err(s)
}

/// The last member named `name`, as `serde_json` keeps it.
fn member<'t, 'a>(members: &'t [(Cow<'a, str>, Tree<'a>)], name: &str) -> Option<&'t Tree<'a>> {
    members
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn text<'t>(tree: Option<&'t Tree<'_>>) -> Option<&'t str> {
    match tree {
        Some(Tree::Text(text)) => Some(text),
        _ => None,
    }
}

fn envelopes_tree(tree: &Tree<'_>) -> usize {
    match tree {
        Tree::Object(members) => {
            let sealed = text(member(members, "url")) == Some(SEALED_ELEMENT)
                && text(member(members, "valueBase64Binary")).is_some();
            usize::from(sealed)
                + members
                    .iter()
                    .map(|(_, v)| envelopes_tree(v))
                    .sum::<usize>()
        }
        Tree::List(items) => items.iter().map(envelopes_tree).sum(),
        _ => 0,
    }
}

fn open_tree(tree: &mut Tree<'_>) {
    match tree {
        Tree::Object(members) => {
            let sealed = match member(members, "extension") {
                Some(Tree::List(list)) => list.iter().any(|e| match e {
                    Tree::Object(m) => text(member(m, "url")) == Some(SEALED_ELEMENT),
                    _ => false,
                }),
                _ => false,
            };
            if sealed {
                members.retain(|(n, _)| n != "extension");
                members.push((Cow::Borrowed("opened"), Tree::Bool(true)));
            }
            for (_, v) in members.iter_mut() {
                open_tree(v);
            }
        }
        Tree::List(items) => items.iter_mut().for_each(open_tree),
        _ => {}
    }
}

// --- sonic_rs::Value ---

#[derive(Clone, Copy)]
enum Open {
    /// `&mut` through every object and list, as the gateway's open walk goes.
    Descend,
    /// The sealed elements found with `&`, then each reached with `&mut` by its path.
    ByPaths,
}

fn written_by_sonic(bytes: &[u8], open: Open) -> Result<Vec<u8>, String> {
    let mut value: sonic_rs::Value = sonic_rs::from_slice(bytes).map_err(s)?;
    black_box(envelopes_sonic(&value));
    open_sonic(&mut value, open);
    sonic_rs::to_vec(&value).map_err(s)
}

fn envelopes_sonic(value: &sonic_rs::Value) -> usize {
    if let Some(object) = value.as_object() {
        let sealed = object.get(&"url").and_then(|u| u.as_str()) == Some(SEALED_ELEMENT)
            && object
                .get(&"valueBase64Binary")
                .is_some_and(JsonValueTrait::is_str);
        usize::from(sealed)
            + object
                .iter()
                .map(|(_, v)| envelopes_sonic(v))
                .sum::<usize>()
    } else if let Some(items) = value.as_array() {
        items.iter().map(envelopes_sonic).sum()
    } else {
        0
    }
}

fn holds_envelope_sonic(object: &sonic_rs::Object) -> bool {
    object
        .get(&"extension")
        .and_then(|e| e.as_array())
        .is_some_and(|list| {
            list.iter()
                .any(|e| e.get("url").and_then(|u| u.as_str()) == Some(SEALED_ELEMENT))
        })
}

fn opened_sonic(object: &mut sonic_rs::Object) {
    object.remove(&"extension");
    object.insert(&"opened", sonic_rs::Value::from(true));
}

fn open_sonic(value: &mut sonic_rs::Value, open: Open) {
    match open {
        Open::Descend => descend_sonic(value),
        Open::ByPaths => {
            let mut paths = Vec::new();
            find_sonic(value, &mut Vec::new(), &mut paths);
            for path in &paths {
                let mut at = &mut *value;
                for step in path {
                    let next = match step {
                        Step::Name(name) => at.get_mut(name.as_str()),
                        Step::Index(i) => at.get_mut(*i),
                    };
                    at = next.expect("found on the same tree");
                }
                if let Some(object) = at.as_object_mut() {
                    opened_sonic(object);
                }
            }
        }
    }
}

fn descend_sonic(value: &mut sonic_rs::Value) {
    if let Some(object) = value.as_object_mut() {
        if holds_envelope_sonic(object) {
            opened_sonic(object);
        }
        for (_, v) in object.iter_mut() {
            descend_sonic(v);
        }
    } else if let Some(items) = value.as_array_mut() {
        items.iter_mut().for_each(descend_sonic);
    }
}

#[derive(Clone)]
enum Step {
    Name(String),
    Index(usize),
}

fn find_sonic(value: &sonic_rs::Value, path: &mut Vec<Step>, found: &mut Vec<Vec<Step>>) {
    if let Some(object) = value.as_object() {
        if holds_envelope_sonic(object) {
            found.push(path.clone());
        }
        for (name, v) in object {
            path.push(Step::Name(name.to_string()));
            find_sonic(v, path, found);
            path.pop();
        }
    } else if let Some(items) = value.as_array() {
        for (i, v) in items.iter().enumerate() {
            path.push(Step::Index(i));
            find_sonic(v, path, found);
            path.pop();
        }
    }
}
