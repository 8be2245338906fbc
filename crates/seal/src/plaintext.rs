//! The read path's check against the sealing rules: an element the rules seal that stands in
//! clear (neither a sealed placeholder nor absent) did not come from FHIRseal, so it is withheld
//! as forged (`docs/authenticity.md`, "Plaintext where the rules say sealed").
//!
//! It finds elements exactly as sealing does ([`select`], [`each_display`], the narrative after
//! anything sealed), on the resource in its upstream form, before anything is opened. A value in
//! clear goes, and the placeholder a reader gets for a forged element stands in its place: `_name`
//! of a primitive, the element itself for a complex one, `dataAbsentReason` coded `error` for
//! `value[x]`, the neutral narrative for `text`. A genuine placeholder beside a value in clear
//! goes with it: the element is not what FHIRseal wrote, so nothing of it opens.

use fhirseal_fhir::Members;
use serde_json::{Map, Value};

use crate::SealError;
use crate::rules::{Displays, ElementRule, Narrative, RuleSet, Rules};
use crate::seal::{Slot, contained_loc, each_display, select};
use crate::shape::{NEUTRAL_DIV, forged_narrative, forged_placeholder_for, insert_at, is_sealed};

/// What the check calls with the concrete path of each element it withholds.
pub(crate) type Withheld<'f> = dyn FnMut(&str) + 'f;

/// Withholds, in `object` (a resource at path `loc`) and its contained resources, every element
/// `rules` seal that stands in clear, calling `forged` with each one's path.
pub(crate) fn withhold_plaintext(
    object: &mut Map<String, Value>,
    rules: &Rules,
    loc: &str,
    forged: &mut Withheld<'_>,
) {
    let present = check_resource(object, rules, loc, forged);
    let set = rules.for_type(resource_type(object));
    if present > 0 && set.map_or(Displays::default(), RuleSet::displays) == Displays::All {
        let context = resource_type(object).to_string();
        let _ = each_display(object, &context, loc, &mut |reference, _, at| {
            forged(&format!("{at}.display"));
            replace_primitive(reference, "display", "_display");
            Ok(())
        });
    }
}

/// Checks the rules of `object`'s type and those of its contained resources, then its narrative;
/// returns how many elements the rules select are present (sealed or not), as sealing counts
/// what it sealed.
fn check_resource(
    object: &mut Map<String, Value>,
    rules: &Rules,
    loc: &str,
    forged: &mut Withheld<'_>,
) -> usize {
    let set = rules.for_type(resource_type(object));
    let mut present = 0;
    for rule in set.map_or(&[][..], RuleSet::elements) {
        present += check_rule(object, rule, loc, forged);
    }
    if let Some(Value::Array(contained)) = object.member_mut("contained") {
        for (i, inner) in contained.iter_mut().enumerate() {
            if let Some(inner) = inner.as_object_mut() {
                let inner_loc = contained_loc(loc, inner, i);
                present += check_resource(inner, rules, &inner_loc, forged);
            }
        }
    }
    if present > 0 {
        let narrative = set.map_or(Narrative::default(), RuleSet::narrative);
        check_narrative(object, narrative, loc, forged);
    }
    present
}

/// The elements `rule` selects in `object`: how many are present, those in clear withheld. A
/// shape sealing refuses (an array where R4 has one value…) is not FHIRseal's either: the member
/// holding it goes.
fn check_rule(
    object: &mut Map<String, Value>,
    rule: &ElementRule,
    loc: &str,
    forged: &mut Withheld<'_>,
) -> usize {
    let mut present = 0;
    let result = select(object, rule.path().steps(), loc, &mut |holder, slot| {
        present += match slot {
            Slot::Field {
                key,
                primitive,
                absent_reason,
                path,
            } => check_field(holder, &key, primitive, absent_reason, &path, forged),
            Slot::Items {
                key,
                indices,
                primitive,
                path,
            } => check_items(holder, &key, &indices, primitive, &path, forged),
        };
        Ok(())
    });
    if let (Err(SealError::Invalid { path, .. }), Some(first)) =
        (result, rule.path().steps().first())
    {
        forged(&path);
        object.retain(|k, _| {
            let name = k.strip_prefix('_').unwrap_or(k);
            !(name == first.name || first.choice && name.starts_with(&first.name))
        });
        present += 1;
    }
    present
}

/// A single element `key` of `holder`: 1 if present, withheld when in clear.
fn check_field(
    holder: &mut Map<String, Value>,
    key: &str,
    primitive: bool,
    absent_reason: bool,
    path: &str,
    forged: &mut Withheld<'_>,
) -> usize {
    let companion = format!("_{key}");
    let value = holder.member(key).filter(|v| !v.is_null());
    let extra = holder.member(&companion).filter(|v| !v.is_null());
    if value.is_none() && extra.is_none() {
        return 0;
    }
    // Sealing leaves no `value[x]` and no primitive's value; a complex element or a primitive's
    // `_name` only as a placeholder.
    let clear = absent_reason
        || value.is_some_and(|v| primitive || !is_sealed(v))
        || extra.is_some_and(|e| !is_sealed(e));
    if !clear {
        return 1;
    }
    forged(path);
    if absent_reason {
        let at = position(holder, &[key, &companion, "dataAbsentReason"]);
        for name in [key, &companion, "dataAbsentReason"] {
            holder.shift_remove(name);
        }
        let placeholder = forged_placeholder_for(key, None, true);
        insert_at(holder, at, "dataAbsentReason".into(), placeholder);
    } else if primitive {
        replace_primitive(holder, key, &companion);
    } else {
        let at = position(holder, &[key]);
        let original = holder.shift_remove(key);
        let placeholder = forged_placeholder_for(key, original.as_ref(), false);
        insert_at(holder, at, key.to_string(), placeholder);
    }
    1
}

/// Items `indices` of the repeating element `key` of `holder`: how many are present, those in
/// clear withheld.
fn check_items(
    holder: &mut Map<String, Value>,
    key: &str,
    indices: &[usize],
    primitive: bool,
    path: &str,
    forged: &mut Withheld<'_>,
) -> usize {
    let companion = format!("_{key}");
    let mut present = 0;
    for &i in indices {
        let item = |name: &str| {
            holder
                .get(name)
                .and_then(|items| items.get(i))
                .filter(|v| !v.is_null())
        };
        let (value, extra) = (item(key), item(&companion).filter(|_| primitive));
        if value.is_none() && extra.is_none() {
            continue;
        }
        present += 1;
        let clear = value.is_some_and(|v| primitive || !is_sealed(v))
            || extra.is_some_and(|e| !is_sealed(e));
        if !clear {
            continue;
        }
        forged(&format!("{path}[{i}]"));
        if primitive {
            withhold_primitive_item(holder, key, &companion, i);
        } else if let Some(item) = holder.member_mut(key).and_then(|items| items.get_mut(i)) {
            *item = forged_placeholder_for(key, Some(item), false);
        }
    }
    present
}

/// Item `i` of a repeating primitive: its value `null`, its `_name` the forged placeholder (the
/// value array goes when all its values are `null`, as sealing leaves it).
fn withhold_primitive_item(holder: &mut Map<String, Value>, key: &str, companion: &str, i: usize) {
    let values_len = holder
        .get(key)
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if let Some(Value::Array(values)) = holder.member_mut(key)
        && let Some(value) = values.get_mut(i)
    {
        *value = Value::Null;
    }
    if !holder.member(companion).is_some_and(Value::is_array) {
        let at = position(holder, &[key, companion]) + 1;
        holder.shift_remove(companion);
        insert_at(holder, at, companion.to_string(), Value::Array(Vec::new()));
    }
    if let Some(Value::Array(companions)) = holder.member_mut(companion) {
        let len = companions.len().max(values_len).max(i + 1);
        companions.resize(len, Value::Null);
        companions[i] = forged_placeholder_for(key, None, false);
    }
    if holder
        .get(key)
        .and_then(Value::as_array)
        .is_some_and(|values| values.iter().all(Value::is_null))
    {
        holder.shift_remove(key);
    }
}

/// A single primitive `key`: its value goes, its `companion` becomes the forged placeholder.
fn replace_primitive(holder: &mut Map<String, Value>, key: &str, companion: &str) {
    let at = position(holder, &[key, companion]);
    holder.shift_remove(key);
    holder.shift_remove(companion);
    let placeholder = forged_placeholder_for(key, None, false);
    insert_at(holder, at, companion.to_string(), placeholder);
}

/// The narrative of a resource in which something is sealed: sealed ([`Narrative::Seal`]) or
/// the neutral one ([`Narrative::Neutral`]), otherwise withheld.
fn check_narrative(
    object: &mut Map<String, Value>,
    narrative: Narrative,
    loc: &str,
    forged: &mut Withheld<'_>,
) {
    let Some(text) = object.member_mut("text") else {
        return;
    };
    let clear = !is_sealed(text)
        && match narrative {
            Narrative::Seal => true,
            Narrative::Neutral => text.member("div").and_then(Value::as_str) != Some(NEUTRAL_DIV),
        };
    if clear {
        forged(&format!("{loc}.text"));
        *text = forged_narrative();
    }
}

/// Where the first of `names` is in `holder` (its end when none is).
fn position(holder: &Map<String, Value>, names: &[&str]) -> usize {
    holder
        .keys()
        .position(|k| names.contains(&k.as_str()))
        .unwrap_or(holder.len())
}

fn resource_type(object: &Map<String, Value>) -> &str {
    object
        .member("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
}
