//! Differential test of `to_python_json` against real Python 3.
//!
//! Thousands of pseudo-random JSON texts (fixed seed, so every run checks the same inputs) go
//! to one `python3` process, which prints `json.dumps(json.loads(line))` per line. The same
//! text parsed by serde_json and rendered by `to_python_json` must match byte for byte.
//! Python is required: without it the test fails rather than silently passing.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use webhookd::delivery::pyjson::to_python_json;

/// Random values checked on top of the hand-picked edge cases.
const RANDOM_VALUES: usize = 3000;

/// Reads one JSON text per line from stdin and writes Python's `json.dumps` of each.
/// Lines are split on `\n` only (not `str.splitlines`), since strings may hold raw U+2028.
const PYTHON_SCRIPT: &str = r#"
import json, sys
for line in sys.stdin.buffer.read().decode("utf-8").split("\n"):
    if not line:
        continue
    try:
        out = json.dumps(json.loads(line))
    except Exception as e:
        out = "PYTHON ERROR: %r" % (e,)
    sys.stdout.write(out + "\n")
"#;

/// Number literals on or around the boundaries of Python's int/float handling and repr.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "-0e0",
    "0E-7",
    "1",
    "-1",
    "1.0",
    "2.5",
    "0.1",
    "0.30000000000000004",
    "100",
    "1E5",
    "1e+5",
    "1e-4",
    "1e-5",
    "0.0001",
    "0.00001",
    "0.000123",
    "1e15",
    "1e16",
    "1.5e16",
    "9999999999999998.0",
    "1234567890123456.0",
    "12345678901234567.0",
    "123456789012345678.5",
    "1e22",
    "1e23",
    "1.5e300",
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "1e400",
    "-1e400",
    "1E400",
    "1e-400",
    "1e99999999999999999999",
    "-1e-99999999999999999999",
    "-1e-400",
    "1e-320",
    "-1e-320",
    "4.9e-324",
    "5e-324",
    "2.4703282292062327e-324",
    "2.2250738585072014e-308",
    "2.225073858507201e-308",
    "9007199254740993",
    "9007199254740993.0",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "18446744073709551617",
    "-18446744073709551617",
    "1234567890123456789012345678901234567890",
    "-1234567890123456789012345678901234567890",
];

/// Characters that each exercise a distinct escaping rule.
const SPECIAL_CHARS: &[char] = &[
    '"',
    '\\',
    '/',
    '\n',
    '\r',
    '\t',
    '\u{8}',
    '\u{c}',
    '\0',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    'é',
    '\u{2028}',
    '\u{2029}',
    '\u{feff}',
    '\u{fffd}',
    '\u{ffff}',
    '😀',
    '\u{10000}',
    '\u{10ffff}',
];

/// xorshift64*: tiny, deterministic, good enough to spread test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, low: u32, high_inclusive: u32) -> u32 {
        low + (self.next() % u64::from(high_inclusive - low + 1)) as u32
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn digits(&mut self, count: usize, out: &mut String) {
        for _ in 0..count {
            out.push(char::from(b'0' + self.below(10) as u8));
        }
    }
}

/// Optional insignificant whitespace, so parsing of varied layouts is exercised too.
fn whitespace(rng: &mut Rng, out: &mut String) {
    if rng.chance(15) {
        out.push_str(rng.pick(&[" ", "  ", "\t", " \t "]));
    }
}

fn random_char(rng: &mut Rng) -> char {
    let code = match rng.below(8) {
        0..=2 => rng.range(0x20, 0x7e),
        3 => rng.range(0x00, 0x1f),
        4 => rng.range(0x7f, 0xff),
        5 => rng.range(0x100, 0xd7ff),
        6 => rng.range(0xe000, 0xffff),
        _ => rng.range(0x1_0000, 0x10_ffff),
    };
    // The ranges above skip surrogates, so this always succeeds; fall back just in case.
    char::from_u32(code).unwrap_or('?')
}

fn random_string(rng: &mut Rng) -> String {
    let len = rng.below(12);
    (0..len)
        .map(|_| {
            if rng.chance(20) {
                rng.pick(SPECIAL_CHARS)
            } else {
                random_char(rng)
            }
        })
        .collect()
}

/// Writes `text` as a JSON string literal, escaping at random where escaping is optional.
fn write_string_literal(rng: &mut Rng, text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if rng.chance(30) => out.push_str("\\/"),
            '\n' if rng.chance(50) => out.push_str("\\n"),
            c if u32::from(c) < 0x20 || rng.chance(15) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if rng.chance(50) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(rng: &mut Rng, out: &mut String) {
    match rng.below(8) {
        0 => out.push_str(rng.pick(EDGE_NUMBERS)),
        1 => {
            // Ordinary integers of every magnitude up to i32, both signs.
            let int = rng.next() as i32 >> rng.below(32);
            out.push_str(&int.to_string());
        }
        2 => {
            // Big integers, up to 60 digits (Python refuses beyond 4300).
            if rng.chance(40) {
                out.push('-');
            }
            out.push(char::from(b'1' + rng.below(9) as u8));
            let len = rng.below(60);
            rng.digits(len, out);
        }
        3 | 4 => {
            // Any finite double, spelled in a few ways Rust offers.
            let float = loop {
                let candidate = f64::from_bits(rng.next());
                if candidate.is_finite() {
                    break candidate;
                }
            };
            let text = match rng.below(4) {
                0 => format!("{float:e}"),
                1 => format!("{float:?}"),
                2 => format!("{float:.17e}"),
                _ => format!("{float:E}"),
            };
            out.push_str(&text);
        }
        5 => {
            // Powers of ten and near-integers around repr's positional/exponent switch.
            let exponent = rng.range(0, 44) as i32 - 22;
            let mantissa = rng.pick(&["1", "9.999", "1.5", "123", "-7", "4.2", "99999999"]);
            out.push_str(&format!("{mantissa}e{exponent}"));
        }
        _ => {
            // Random grammar-valid literal: int part, optional fraction and exponent.
            if rng.chance(40) {
                out.push('-');
            }
            if rng.chance(30) {
                out.push('0');
            } else {
                out.push(char::from(b'1' + rng.below(9) as u8));
                let len = rng.below(20);
                rng.digits(len, out);
            }
            let has_fraction = rng.chance(60);
            if has_fraction {
                out.push('.');
                let len = 1 + rng.below(25);
                rng.digits(len, out);
            }
            if !has_fraction || rng.chance(50) {
                out.push_str(rng.pick(&["e", "E"]));
                out.push_str(rng.pick(&["", "+", "-"]));
                let len = 1 + rng.below(3);
                rng.digits(len, out);
            }
        }
    }
}

fn write_value(rng: &mut Rng, depth: usize, out: &mut String) {
    let kind = if depth == 0 {
        2 + rng.below(5)
    } else {
        rng.below(7)
    };
    match kind {
        0 => {
            out.push('{');
            let mut keys = HashSet::new();
            for _ in 0..rng.below(6) {
                let key = random_string(rng);
                // Duplicate keys resolve differently in general, so keep them unique.
                if !keys.insert(key.clone()) {
                    continue;
                }
                if keys.len() > 1 {
                    out.push(',');
                }
                whitespace(rng, out);
                write_string_literal(rng, &key, out);
                whitespace(rng, out);
                out.push(':');
                whitespace(rng, out);
                write_value(rng, depth - 1, out);
                whitespace(rng, out);
            }
            out.push('}');
        }
        1 => {
            out.push('[');
            for index in 0..rng.below(6) {
                if index > 0 {
                    out.push(',');
                }
                whitespace(rng, out);
                write_value(rng, depth - 1, out);
                whitespace(rng, out);
            }
            out.push(']');
        }
        2 | 3 => write_number(rng, out),
        4 => {
            let text = random_string(rng);
            write_string_literal(rng, &text, out);
        }
        _ => out.push_str(rng.pick(&["null", "true", "false"])),
    }
}

/// All inputs: each edge number alone and inside containers, then the random values.
fn inputs() -> Vec<String> {
    let mut inputs: Vec<String> = EDGE_NUMBERS
        .iter()
        .flat_map(|n| [n.to_string(), format!("[{n}, {{\"k\": {n}}}]")])
        .collect();
    inputs.extend(SPECIAL_CHARS.iter().map(|c| {
        let mut literal = String::new();
        write_string_literal(&mut Rng(1), &c.to_string(), &mut literal);
        literal
    }));
    inputs.extend(["{}", "[]", "[{}, []]", r#"{"": {}}"#].map(String::from));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..RANDOM_VALUES {
        let mut text = String::new();
        let depth = rng.below(5);
        write_value(&mut rng, depth, &mut text);
        inputs.push(text);
    }
    inputs
}

/// Runs all inputs through one Python process and returns its output lines.
fn python_dumps(inputs: &[String]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-I", "-c", PYTHON_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "could not start `python3` ({error}): this differential test needs Python 3 \
                 on PATH to compare against json.dumps"
            )
        });
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let batch = inputs.join("\n") + "\n";
    // Write from another thread so a full stdout pipe can never deadlock us.
    let writer = std::thread::spawn(move || stdin.write_all(batch.as_bytes()));
    let output = child
        .wait_with_output()
        .expect("python3 runs to completion");
    writer
        .join()
        .expect("writer thread")
        .expect("write inputs to python3");
    assert!(
        output.status.success(),
        "python3 failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("json.dumps output is ASCII")
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn matches_python_json_dumps() {
    let inputs = inputs();
    assert!(inputs.len() >= 1000, "only {} inputs", inputs.len());
    let expected = python_dumps(&inputs);
    assert_eq!(
        expected.len(),
        inputs.len(),
        "python3 printed a different number of lines"
    );

    let mut mismatches = 0;
    for (input, python) in inputs.iter().zip(&expected) {
        let value: Value = serde_json::from_str(input)
            .unwrap_or_else(|error| panic!("serde_json rejected {input:?}: {error}"));
        let ours = to_python_json(&value);
        if &ours != python {
            mismatches += 1;
            if mismatches <= 20 {
                eprintln!("MISMATCH\n  input:  {input}\n  python: {python}\n  ours:   {ours}");
            }
        }
    }
    println!("compared {} values with python3 json.dumps", inputs.len());
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} values differ from Python",
        inputs.len()
    );
}
