//! JSON text byte-identical to Python 3's `json.dumps(value)` with default arguments.
//!
//! PyWebhooks signs the bytes of `json.dumps(event_data)`, and its reference Python receiver
//! re-serialises the received body with `json.dumps` before checking the HMAC. A body that is
//! the same JSON but formatted differently (serde_json's compact form, another float spelling)
//! therefore fails verification, so deliveries are serialised here in exactly Python's form:
//!
//! - separators `", "` and `": "`, keys in the map's order (serde_json `preserve_order`);
//! - `ensure_ascii`: everything outside 0x20..=0x7E becomes `\uXXXX` (lowercase hex,
//!   surrogate pairs above the BMP), with the short escapes `\" \\ \n \r \t \b \f`;
//! - numbers as `json.loads` would have read them: integers exactly (`-0` is `0`), anything
//!   with `.`, `e` or `E` as a float written in `repr` form, overflow as `Infinity`.
//!
//! Numbers rely on serde_json's `arbitrary_precision` feature, which keeps each number's
//! source text, so big integers survive and floats can be re-read the way Python reads them.

use serde_json::{Number, Value};

/// Serialises `value` exactly as Python 3's `json.dumps(value)` would.
///
/// The result is pure ASCII; its bytes are what gets signed and sent.
///
/// ```
/// let value: serde_json::Value = serde_json::from_str(r#"{"a":[1,2.0,"é",1e-5]}"#).unwrap();
/// assert_eq!(
///     webhookd::delivery::pyjson::to_python_json(&value),
///     r#"{"a": [1, 2.0, "\u00e9", 1e-05]}"#
/// );
/// ```
pub fn to_python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python_json(value, &mut out);
    out
}

/// Appends the `json.dumps` form of `value` to `out` (see [`to_python_json`]).
///
/// Infallible: every [`Value`] has a Python rendering. Recursion follows the value's nesting,
/// which serde_json's parser caps at 128 levels.
pub fn write_python_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_python_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_python_json(item, out);
            }
            out.push('}');
        }
    }
}

/// Writes a string with `ensure_ascii=True` escaping.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    // Copy runs of characters that need no escaping in one go.
    let mut run_start = 0;
    for (index, c) in text.char_indices() {
        let short_escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            ' '..='~' => continue,
            _ => "",
        };
        out.push_str(&text[run_start..index]);
        run_start = index + c.len_utf8();
        if short_escape.is_empty() {
            // Python escapes UTF-16 code units, so astral characters become surrogate pairs.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                push_unicode_escape(*unit, out);
            }
        } else {
            out.push_str(short_escape);
        }
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

/// Writes `\uXXXX` with lowercase hex digits, as Python's encoder does.
fn push_unicode_escape(unit: u16, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
    }
}

/// Writes a number as Python would after `json.loads` turned its text into `int` or `float`.
fn write_number(number: &Number, out: &mut String) {
    let text = number.as_str();
    // Python's json.loads makes a float of exactly the literals with a fraction or exponent.
    if text.contains(['.', 'e', 'E']) {
        match text.parse::<f64>() {
            Ok(float) => write_float(float, out),
            // Only a hand-built Number (serde_json's hidden `from_string_unchecked`) can
            // get here; keep its text rather than fail.
            Err(_) => out.push_str(text),
        }
    } else {
        write_integer(text, out);
    }
}

/// Writes an integer literal in canonical form: no leading zeros and no `-0`.
fn write_integer(text: &str, out: &mut String) {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        // Not an integer literal (only possible for a hand-built Number): keep its text.
        out.push_str(text);
        return;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        // Python's int has no negative zero: `-0` loads as 0.
        out.push('0');
        return;
    }
    if negative {
        out.push('-');
    }
    out.push_str(significant);
}

/// Writes a float as Python's `float.__repr__`, plus json.dumps' spellings of non-finite values.
fn write_float(float: f64, out: &mut String) {
    if float.is_nan() {
        out.push_str("NaN");
        return;
    }
    if float.is_infinite() {
        // Literals such as 1e400 load as inf, which json.dumps writes as JavaScript does.
        out.push_str(if float > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if float.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` yields the shortest digits that round-trip, the same digits Python's repr
    // picks; only the layout differs. It is always `D[.DDD]e[-]N` with D a digit.
    let scientific = format!("{:e}", float.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (lead, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));

    // repr switches to exponent form when the decimal exponent is < -4 or >= 16.
    if !(-4..16).contains(&exponent) {
        out.push_str(lead);
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(fraction);
        }
        out.push_str(if exponent < 0 { "e-" } else { "e+" });
        // At least two exponent digits: `1e-05`, `1e+16`.
        if exponent.abs() < 10 {
            out.push('0');
        }
        out.push_str(&exponent.abs().to_string());
        return;
    }

    let digits = format!("{lead}{fraction}");
    if exponent < 0 {
        // 0.000DDD: the leading zeros come from the exponent.
        let zeros = exponent.unsigned_abs() as usize - 1;
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', zeros));
        out.push_str(&digits);
        return;
    }
    let integer_len = exponent.unsigned_abs() as usize + 1;
    if digits.len() > integer_len {
        let (integer, fraction) = digits.split_at(integer_len);
        out.push_str(integer);
        out.push('.');
        out.push_str(fraction);
    } else {
        // Integral value: pad to the decimal point and add `.0` as repr does.
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', integer_len - digits.len()));
        out.push_str(".0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `json` the way the daemon does and renders it Python-style.
    fn py(json: &str) -> String {
        let value: Value = serde_json::from_str(json).expect("test input is valid JSON");
        to_python_json(&value)
    }

    #[test]
    fn observed_pywebhooks_body() {
        let input = r#"{"message":"John Doe","b":[1,2.5,"é",{"z":1,"a":2}],"a":null,"t":true}"#;
        assert_eq!(
            py(input),
            r#"{"message": "John Doe", "b": [1, 2.5, "\u00e9", {"z": 1, "a": 2}], "a": null, "t": true}"#
        );
    }

    #[test]
    fn empty_containers_and_literals() {
        assert_eq!(py("{}"), "{}");
        assert_eq!(py("[]"), "[]");
        assert_eq!(
            py(r#"[{}, [], [[]], {"k": {}}]"#),
            r#"[{}, [], [[]], {"k": {}}]"#
        );
        assert_eq!(py("[true,false,null]"), "[true, false, null]");
    }

    #[test]
    fn string_escapes() {
        assert_eq!(py(r#""a\"b\\c/d\n\r\t\b\f""#), r#""a\"b\\c/d\n\r\t\b\f""#);
        assert_eq!(py(r#""\u0000\u001f\u007f ~""#), r#""\u0000\u001f\u007f ~""#);
        assert_eq!(py("\"\u{80}\u{ffff}\""), r#""\u0080\uffff""#);
        assert_eq!(py("\"😀\u{10ffff}\""), r#""\ud83d\ude00\udbff\udfff""#);
        assert_eq!(py(r#"{"é": 1}"#), r#"{"\u00e9": 1}"#);
    }

    #[test]
    fn integers() {
        assert_eq!(py("-0"), "0");
        assert_eq!(py("0"), "0");
        assert_eq!(py("-17"), "-17");
        assert_eq!(py("18446744073709551617"), "18446744073709551617");
        assert_eq!(
            py("-1234567890123456789012345678901234567890"),
            "-1234567890123456789012345678901234567890"
        );
    }

    #[test]
    fn floats_in_repr_form() {
        let cases = [
            ("2.5", "2.5"),
            ("1.0", "1.0"),
            ("1E5", "100000.0"),
            ("-0.0", "-0.0"),
            ("-0e0", "-0.0"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-1.5e-7", "-1.5e-07"),
            ("1234567890123456.0", "1234567890123456.0"),
            ("1e16", "1e+16"),
            ("1.5e300", "1.5e+300"),
            ("123456789012345678.5", "1.2345678901234568e+17"),
            ("0.1", "0.1"),
            ("5e-324", "5e-324"),
            ("1e-320", "1e-320"),
            ("1e-400", "0.0"),
            ("-1e-400", "-0.0"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ];
        for (input, expected) in cases {
            assert_eq!(py(input), expected, "input {input}");
        }
    }

    #[test]
    fn float_overflow_is_infinity() {
        assert_eq!(py("1e400"), "Infinity");
        assert_eq!(py("-1e400"), "-Infinity");
        assert_eq!(py("[1e400, -1E400]"), "[Infinity, -Infinity]");
        // Exponents far beyond i32 still saturate instead of failing to parse.
        assert_eq!(py("1e99999999999999999999"), "Infinity");
        assert_eq!(py("-1e-99999999999999999999"), "-0.0");
    }

    #[test]
    fn values_built_in_code() {
        // Values built in code rather than parsed still render as Python would.
        assert_eq!(to_python_json(&serde_json::json!(1e16)), "1e+16");
        assert_eq!(
            to_python_json(&serde_json::json!(u64::MAX)),
            "18446744073709551615"
        );
        assert_eq!(to_python_json(&serde_json::json!(-0.0)), "-0.0");
    }
}

/// Property test of the writer: its output, parsed back, is the input.
///
/// Equality is JSON's as Python sees it: integers compare exactly (any length; `-0` is `0`),
/// floats compare as the `f64` they denote, bit for bit (so `-0.0` stays negative), an
/// integer never comes back as a float nor the reverse, and objects keep their key order.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            // Never write regression files into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Parses a JSON text the test itself built.
    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("test JSON {text:?}: {e}"))
    }

    /// Finite floats of every class (normal, subnormal, zeros, both signs).
    fn finite_f64() -> impl Strategy<Value = f64> {
        prop::num::f64::POSITIVE
            | prop::num::f64::NEGATIVE
            | prop::num::f64::NORMAL
            | prop::num::f64::SUBNORMAL
            | prop::num::f64::ZERO
    }

    /// Number literals as a client may write them: with a fraction, an exponent (`e`/`E`,
    /// optional sign) or both, including underflow to zero; finite by construction.
    fn float_literal() -> impl Strategy<Value = Value> {
        (
            "-?(0|[1-9][0-9]{0,16})",
            prop::option::of("[0-9]{1,17}"),
            prop::option::of(("[eE]", "[-+]?", -400i32..=290)),
        )
            .prop_filter(
                "a float literal has a fraction or an exponent",
                |(_, f, e)| f.is_some() || e.is_some(),
            )
            .prop_map(|(int, frac, exp)| {
                let mut text = int;
                if let Some(frac) = frac {
                    text.push('.');
                    text.push_str(&frac);
                }
                if let Some((marker, sign, value)) = exp {
                    text.push_str(&marker);
                    if value < 0 {
                        text.push('-');
                    } else {
                        text.push_str(&sign.replace('-', ""));
                    }
                    text.push_str(&value.unsigned_abs().to_string());
                }
                parse(&text)
            })
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Integers beyond 64 bits, and `-0`.
            "-?[1-9][0-9]{18,60}".prop_map(|t| parse(&t)),
            Just(parse("-0")),
            finite_f64().prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
            float_literal(),
        ]
    }

    /// Strings mixing ASCII, the short escapes, control characters, DEL, BMP (around the
    /// surrogate gap, U+2028/9, BOM) and astral characters.
    fn text() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '"',
            '\\',
            '/',
            '\u{7f}',
            '\u{80}',
            '\u{a0}',
            '\u{2028}',
            '\u{2029}',
            '\u{d7ff}',
            '\u{e000}',
            '\u{feff}',
            '\u{fffd}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
            '\u{10ffff}',
        ]);
        prop::collection::vec(
            prop_oneof![
                prop::char::range(' ', '~'),
                prop::char::range('\0', '\u{1f}'),
                special,
                any::<char>(),
            ],
            0..12,
        )
        .prop_map(String::from_iter)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn is_float_text(text: &str) -> bool {
        text.contains(['.', 'e', 'E'])
    }

    /// An integer literal without sign on zero or leading zeros.
    fn canonical_integer(text: &str) -> String {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(digits) => (true, digits),
            None => (false, text),
        };
        let digits = digits.trim_start_matches('0');
        match (digits.is_empty(), negative) {
            (true, _) => "0".into(),
            (false, true) => format!("-{digits}"),
            (false, false) => digits.into(),
        }
    }

    /// `Err(where and what)` on the first difference.
    fn same(expected: &Value, got: &Value, path: &str) -> Result<(), String> {
        let differ = || Err(format!("at {path}: expected {expected}, got {got}"));
        match (expected, got) {
            (Value::Null, Value::Null) => Ok(()),
            (Value::Bool(a), Value::Bool(b)) if a == b => Ok(()),
            (Value::String(a), Value::String(b)) if a == b => Ok(()),
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (a.as_str(), b.as_str());
                let equal = match (is_float_text(a), is_float_text(b)) {
                    (false, false) => canonical_integer(a) == canonical_integer(b),
                    (true, true) => match (a.parse::<f64>(), b.parse::<f64>()) {
                        (Ok(x), Ok(y)) => x.to_bits() == y.to_bits(),
                        _ => false,
                    },
                    _ => false,
                };
                if equal {
                    Ok(())
                } else {
                    differ()
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    same(x, y, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            (Value::Object(a), Value::Object(b)) if a.len() == b.len() => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    if ka != kb {
                        return Err(format!("at {path}: key {ka:?} came back as {kb:?}"));
                    }
                    same(va, vb, &format!("{path}.{ka:?}"))?;
                }
                Ok(())
            }
            _ => differ(),
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// `json.loads(json.dumps(v)) == v`, with the output pure ASCII and a fixed point of
        /// the writer (rendering the parsed-back value gives the same bytes).
        #[test]
        fn output_parses_back_to_the_input(value in json_value()) {
            let text = to_python_json(&value);
            prop_assert!(text.is_ascii(), "not ASCII: {}", text);
            let back: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("output is not JSON ({e}): {text}")))?;
            if let Err(diff) = same(&value, &back, "$") {
                return Err(TestCaseError::fail(format!("{diff}\noutput: {text}")));
            }
            prop_assert_eq!(to_python_json(&back), text);
        }

        /// The same for values that came from JSON text, as event_data does.
        #[test]
        fn parsed_input_round_trips(value in json_value()) {
            let input: Value = parse(&serde_json::to_string(&value).expect("serialisable"));
            let text = to_python_json(&input);
            let back: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("output is not JSON ({e}): {text}")))?;
            if let Err(diff) = same(&input, &back, "$") {
                return Err(TestCaseError::fail(format!("{diff}\noutput: {text}")));
            }
        }
    }
}
