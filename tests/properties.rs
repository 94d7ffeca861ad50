//! Property tests of the pure decisions: interval parsing, property extraction, Base64
//! decoding, the data-hash mark and the read plan. Each property holds for every input
//! proptest generates, bad input included: these functions see whatever a user or Key
//! Vault hands them, so "never panics, and refuses with a reason" is part of each.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;
use vaultsync::api::Decoding;
use vaultsync::controller::data_hash::{
    DataHashKey, HashMatch, check_recorded, is_legacy_form, legacy_data_hash,
};
use vaultsync::controller::decide::{
    Base64Error, PlanInput, PropertyMiss, ReadCause, ReadPlan, ValueError, decode_base64,
    entry_value, extract_property, jitter_fraction, parse_interval, plan_read, shared_read_floor,
};
use vaultsync::source::{FetchedSecret, SecretBytes};

fn config() -> ProptestConfig {
    // Enough cases to find the edges, few enough that `make test` stays quick.
    ProptestConfig::with_cases(256)
}

// --- refreshInterval ------------------------------------------------------------------

/// One `<number><unit>` part and its seconds.
fn interval_part() -> impl Strategy<Value = (String, u64)> {
    (
        0u64..100_000,
        prop::sample::select(vec![('s', 1u64), ('m', 60), ('h', 3600)]),
    )
        .prop_map(|(n, (unit, secs))| (format!("{n}{unit}"), n * secs))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_interval_is_the_sum_of_its_parts(parts in prop::collection::vec(interval_part(), 1..5)) {
        let text: String = parts.iter().map(|(t, _)| t.as_str()).collect();
        let seconds: u64 = parts.iter().map(|(_, s)| s).sum();
        prop_assert_eq!(parse_interval(&text), Ok(Duration::from_secs(seconds)));
    }

    #[test]
    fn any_text_parses_only_if_it_is_numbers_with_units(text in ".{0,24}") {
        let shaped = !text.is_empty()
            && text.chars().all(|c| c.is_ascii_digit() || matches!(c, 's' | 'm' | 'h'))
            && text.ends_with(['s', 'm', 'h'])
            && text.starts_with(|c: char| c.is_ascii_digit())
            && !text.contains("ss") && !text.contains("mm") && !text.contains("hh")
            && !text.contains("sm") && !text.contains("sh") && !text.contains("ms")
            && !text.contains("mh") && !text.contains("hs") && !text.contains("hm")
            // A number past u64 is refused too (see the next property).
            && text.split(['s', 'm', 'h']).all(|n| n.len() < 20);
        match parse_interval(&text) {
            Ok(_) => prop_assert!(shaped, "{text:?} parsed"),
            // A refusal names the field, so the message is actionable where it shows.
            Err(message) => {
                prop_assert!(!shaped, "{text:?} refused: {message}");
                prop_assert!(message.contains("refreshInterval"), "{message}");
            }
        }
    }

    #[test]
    fn huge_intervals_saturate_instead_of_overflowing(n in "[0-9]{20,40}", unit in "[smh]") {
        // Never a panic: the number is too big for u64 (refused) or saturates.
        let _ = parse_interval(&format!("{n}{unit}"));
    }
}

// --- property extraction ----------------------------------------------------------------

fn json_key() -> impl Strategy<Value = String> {
    // Dots, slashes, tildes, quotes and non-ASCII: the characters the rules mention.
    prop::string::string_regex("[a-zA-Z0-9._~/\"\\\\ é€-]{0,12}").unwrap()
}

/// The RFC 6901 form of one reference token.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_string_property_gives_its_unescaped_text(
        object in prop::collection::btree_map(json_key(), ".{0,40}", 1..6),
        bom in any::<bool>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let (key, value) = object.iter().nth(pick.index(object.len())).unwrap();
        let mut json = serde_json::to_vec(&object).unwrap();
        if bom {
            json.splice(0..0, b"\xEF\xBB\xBF".iter().copied());
        }
        if !key.starts_with('/') {
            let got = extract_property(&json, key).unwrap();
            prop_assert_eq!(got.expose(), value.as_bytes());
        }
        let pointer = format!("/{}", pointer_token(key));
        let got = extract_property(&json, &pointer).unwrap();
        prop_assert_eq!(got.expose(), value.as_bytes());
    }

    #[test]
    fn a_non_string_property_gives_its_exact_source_text(
        number in any::<i64>(),
        spacing in "[ \t\n]{0,3}",
    ) {
        let json = format!("{{\"n\":{spacing}{number}{spacing},\"b\":{spacing}true}}");
        let got = extract_property(json.as_bytes(), "n").unwrap();
        let text = number.to_string();
        prop_assert_eq!(got.expose(), text.as_bytes());
        let flag = extract_property(json.as_bytes(), "b").unwrap();
        prop_assert_eq!(flag.expose(), b"true");
    }

    #[test]
    fn absent_and_null_properties_are_misses(
        object in prop::collection::btree_map("[a-z]{1,8}", ".{0,10}", 0..5),
        missing in "[A-Z]{1,8}",
    ) {
        let mut with_null = serde_json::to_value(&object).unwrap();
        with_null["NULL"] = serde_json::Value::Null;
        let json = serde_json::to_vec(&with_null).unwrap();
        if missing != "NULL" {
            prop_assert_eq!(extract_property(&json, &missing).unwrap_err(), PropertyMiss::Absent);
        }
        prop_assert_eq!(extract_property(&json, "NULL").unwrap_err(), PropertyMiss::Null);
        prop_assert_eq!(extract_property(&json, "/NULL").unwrap_err(), PropertyMiss::Null);
    }

    #[test]
    fn any_bytes_and_any_property_give_a_value_or_a_miss(
        value in prop::collection::vec(any::<u8>(), 0..200),
        property in ".{0,16}",
    ) {
        // The property is a user's and the value Key Vault's: neither may panic.
        if let Err(miss) = extract_property(&value, &property) {
            // The reason speaks of the shape only.
            let text = miss.to_string();
            prop_assert!(text.len() < 80, "{text}");
        }
        if serde_json::from_slice::<serde_json::Value>(&value).is_err()
            && !value.starts_with(b"\xEF\xBB\xBF")
        {
            prop_assert_eq!(extract_property(&value, &property).unwrap_err(), PropertyMiss::NotJson);
        }
    }

    #[test]
    fn arrays_are_indexed_by_pointer_only(items in prop::collection::vec("[a-z]{0,6}", 1..6), pick in any::<prop::sample::Index>()) {
        let json = serde_json::to_vec(&items).unwrap();
        let i = pick.index(items.len());
        let got = extract_property(&json, &format!("/{i}")).unwrap();
        prop_assert_eq!(got.expose(), items[i].as_bytes());
        prop_assert_eq!(extract_property(&json, &format!("/{}", items.len())).unwrap_err(), PropertyMiss::Absent);
        prop_assert_eq!(extract_property(&json, "0").unwrap_err(), PropertyMiss::NotAnObject);
        if i > 0 {
            // No leading zeros (RFC 6901).
            prop_assert_eq!(extract_property(&json, &format!("/0{i}")).unwrap_err(), PropertyMiss::Absent);
        }
    }
}

// --- Base64 decoding --------------------------------------------------------------------

/// Inserts ASCII whitespace before the characters at `positions`.
fn sprinkle(text: &str, positions: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    for (at, pick) in positions {
        let ws = b" \t\r\n\x0c"[usize::from(*pick) % 5];
        let i = at.index(out.len() + 1);
        out.insert(i, ws);
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_encoder_form_decodes_to_the_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        whitespace in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&bytes);
            let decoded = decode_base64(text.as_bytes()).unwrap();
            prop_assert_eq!(decoded.expose(), bytes.as_slice());
            let spaced = sprinkle(&text, &whitespace);
            let decoded = decode_base64(&spaced).unwrap();
            prop_assert_eq!(decoded.expose(), bytes.as_slice());
        }
    }

    #[test]
    fn any_bytes_decode_or_are_refused_with_an_offset_inside_the_value(
        value in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        match decode_base64(&value) {
            Ok(decoded) => prop_assert!(decoded.len() <= value.len()),
            Err(Base64Error::InvalidCharacter { offset } | Base64Error::InvalidLastCharacter { offset }) => {
                prop_assert!(offset < value.len(), "offset {offset} of {}", value.len());
                prop_assert!(!value[offset].is_ascii_whitespace());
            }
            Err(_) => {}
        }
    }

    #[test]
    fn mixing_the_alphabets_is_refused(
        a in "[A-Za-z0-9]{0,8}", b in "[A-Za-z0-9]{0,8}",
        standard in "[+/]", url in "[-_]",
    ) {
        let text = format!("{a}{standard}{b}{url}");
        prop_assert_eq!(decode_base64(text.as_bytes()).unwrap_err(), Base64Error::MixedAlphabets);
    }

    #[test]
    fn no_decoding_error_message_holds_a_character_of_the_value(
        value in "[!-~]{1,40}",
    ) {
        // A value that is no Base64 may be a real credential pasted with the wrong
        // decoding: the message says where, never what.
        let fetched = FetchedSecret {
            value: SecretBytes::new(value.clone().into_bytes()),
            version: "0".repeat(32),
            content_type: None,
            enabled: Some(true),
            not_before: None,
            expires: None,
        };
        let now = time::OffsetDateTime::now_utc();
        if let Err(e) = entry_value("k", "name", None, Decoding::Base64, &fetched, now) {
            let decoding_failed = matches!(e, ValueError::DecodingFailed { .. });
            prop_assert!(decoding_failed, "{}", e);
            // Short values can match innocently (a digit of an offset, a word).
            if value.len() >= 4 {
                let (message, debug) = (e.to_string(), format!("{e:?}"));
                prop_assert!(!message.contains(&value), "{}", message);
                prop_assert!(!debug.contains(&value), "{}", debug);
            }
        }
    }
}

// --- the data-hash mark ------------------------------------------------------------------

fn secret_data() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    prop::collection::btree_map(
        "[a-zA-Z0-9._-]{1,10}",
        prop::collection::vec(any::<u8>(), 0..40),
        0..6,
    )
}

fn pairs(data: &BTreeMap<String, Vec<u8>>) -> Vec<(&str, &[u8])> {
    data.iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_mark_ignores_order_and_matches_its_own_data(
        data in secret_data(),
        key_bytes in prop::array::uniform32(any::<u8>()),
        other_key in prop::array::uniform32(any::<u8>()),
    ) {
        let key = DataHashKey::from_bytes(&key_bytes).unwrap();
        let forward = pairs(&data);
        let mut backward = forward.clone();
        backward.reverse();
        let mark = key.data_hash(forward.iter().copied());
        prop_assert_eq!(&mark, &key.data_hash(backward.iter().copied()));
        // Hex only: nothing of the data shows.
        prop_assert!(mark.strip_prefix("hmac-sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())));
        prop_assert_eq!(check_recorded(Some(&mark), &key, &forward), HashMatch::Keyed);
        let legacy = legacy_data_hash(forward.iter().copied());
        prop_assert!(is_legacy_form(&legacy));
        prop_assert_eq!(check_recorded(Some(&legacy), &key, &forward), HashMatch::Legacy);
        prop_assert_eq!(check_recorded(None, &key, &forward), HashMatch::Neither);
        if other_key != key_bytes {
            let other = DataHashKey::from_bytes(&other_key).unwrap();
            prop_assert_eq!(check_recorded(Some(&mark), &other, &forward), HashMatch::Neither);
        }
    }

    #[test]
    fn different_data_never_share_a_mark(
        a in secret_data(),
        b in secret_data(),
        key_bytes in prop::array::uniform32(any::<u8>()),
    ) {
        let key = DataHashKey::from_bytes(&key_bytes).unwrap();
        let (ma, mb) = (key.data_hash(pairs(&a)), key.data_hash(pairs(&b)));
        prop_assert_eq!(a == b, ma == mb);
        prop_assert_eq!(check_recorded(Some(&ma), &key, &pairs(&b)) == HashMatch::Keyed, a == b);
    }

    #[test]
    fn moving_a_byte_between_key_and_value_changes_the_mark(
        k in "[a-z]{1,8}", v in prop::collection::vec(any::<u8>(), 1..8),
        key_bytes in prop::array::uniform32(any::<u8>()),
    ) {
        // Length prefixes: ("ab", "c") and ("a", "bc") are different data.
        let key = DataHashKey::from_bytes(&key_bytes).unwrap();
        let mut longer_key = k.clone();
        longer_key.push(char::from(b'a' + v[0] % 26));
        let shorter_value = &v[1..];
        prop_assert_ne!(
            key.data_hash([(k.as_str(), v.as_slice())]),
            key.data_hash([(longer_key.as_str(), shorter_value)])
        );
    }

    #[test]
    fn keys_of_any_other_length_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(DataHashKey::from_bytes(&bytes).is_some(), bytes.len() == 32);
    }
}

// --- the read plan ------------------------------------------------------------------------

fn timestamp(seconds: i64, millis: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap() + Duration::from_millis(millis as u64)
}

prop_compose! {
    fn plan_input_parts()(
        synced in any::<bool>(),
        drift in any::<bool>(),
        failed in any::<bool>(),
        requested in any::<bool>(),
        pinned in any::<bool>(),
        last in prop::option::of(1_000_000i64..2_000_000),
        elapsed_ms in 0i64..20_000_000,
        interval in prop::sample::select(vec![0u64, 10, 60, 3600, 86_400, 604_800]),
        uid in "[a-f0-9-]{8,36}",
    ) -> (bool, bool, bool, bool, bool, Option<i64>, i64, u64, String) {
        (synced, drift, failed, requested, pinned, last, elapsed_ms, interval, uid)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_read_plan_reads_exactly_when_a_rule_says_so(
        (synced, drift, failed, requested, pinned, last, elapsed_ms, interval, uid) in plan_input_parts()
    ) {
        let now = timestamp(last.unwrap_or(1_500_000), elapsed_ms);
        let input = PlanInput {
            synced_this_generation: synced,
            drift,
            refresh_failed: failed,
            refresh_requested: requested,
            last_sync: last.map(|s| timestamp(s, 0)),
            interval: Duration::from_secs(interval),
            jitter_key: &uid,
            now,
            all_pinned_and_synced: pinned,
        };
        let plan = plan_read(&input);
        let expected_cause = if !synced {
            Some(ReadCause::NotSynced)
        } else if drift {
            Some(ReadCause::Drift)
        } else if requested {
            Some(ReadCause::Requested)
        } else if failed {
            Some(ReadCause::RefreshDue)
        } else {
            None
        };
        match (expected_cause, plan) {
            (Some(cause), ReadPlan::Read(got)) => prop_assert_eq!(cause, got),
            (Some(cause), other) => prop_assert!(false, "expected a read for {cause:?}, got {other:?}"),
            (None, plan) if interval == 0 || pinned => prop_assert_eq!(plan, ReadPlan::Wait(None)),
            (None, plan) if last.is_none() => prop_assert_eq!(plan, ReadPlan::Read(ReadCause::NotSynced)),
            (None, plan) => {
                // A refresh comes between one interval and one interval plus 10 % after
                // the last sync, never earlier, and the wait says exactly when.
                let period = Duration::from_secs(interval).mul_f64(1.0 + jitter_fraction(&uid));
                let elapsed = Duration::from_millis(elapsed_ms as u64);
                if elapsed >= period {
                    prop_assert_eq!(plan, ReadPlan::Read(ReadCause::RefreshDue));
                } else {
                    prop_assert_eq!(plan, ReadPlan::Wait(Some(period - elapsed)));
                    prop_assert!(elapsed < Duration::from_secs(interval).mul_f64(1.1));
                }
            }
        }
    }

    #[test]
    fn jitter_stays_below_a_tenth_and_is_fixed_by_its_key(uid in ".{0,40}") {
        let f = jitter_fraction(&uid);
        prop_assert!((0.0..0.1).contains(&f), "{f}");
        prop_assert_eq!(f, jitter_fraction(&uid));
    }

    #[test]
    fn a_shared_read_never_predates_the_objects_last_sync(
        last in prop::option::of(1_000_000i64..2_000_000),
        elapsed_ms in 0i64..10_000_000,
        interval in 0u64..1_000_000,
        cause in prop::sample::select(vec![ReadCause::NotSynced, ReadCause::Drift, ReadCause::RefreshDue, ReadCause::Requested]),
    ) {
        let now = timestamp(last.unwrap_or(1_500_000), elapsed_ms);
        let last_sync = last.map(|s| timestamp(s, 0));
        let floor = shared_read_floor(cause, last_sync, Duration::from_secs(interval), now);
        if let Some(last_sync) = last_sync {
            let floor = floor.expect("a floor once the object has synced");
            prop_assert!(floor >= last_sync + Duration::from_secs(1) || floor == now);
        }
        if matches!(cause, ReadCause::Drift | ReadCause::Requested) {
            prop_assert_eq!(floor, Some(now));
        }
    }
}
