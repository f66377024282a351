//! `start`/`limit` paging over epoch-ordered indexes.
//!
//! The rules are the original's: `0 <= start <= 999_999_999_999_999`, `1 <= limit <= 100`,
//! plain digits only; a full page carries `next_start = start + limit`.

/// Largest accepted `start`.
pub const MAX_START: u64 = 999_999_999_999_999;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u64 = 100;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageRequest {
    /// Rows to skip.
    pub start: u64,
    /// Rows to return at most.
    pub limit: u64,
}

/// Why a page request was refused (always answered with one message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Invalid limit or start parameter")]
pub struct InvalidPage;

impl PageRequest {
    /// Parses the raw `start` and `limit` query values.
    pub fn parse(start: Option<&str>, limit: Option<&str>) -> Result<Self, InvalidPage> {
        let start = parse_digits(start.ok_or(InvalidPage)?)?;
        let limit = parse_digits(limit.ok_or(InvalidPage)?)?;
        if start > MAX_START || !(1..=MAX_LIMIT).contains(&limit) {
            return Err(InvalidPage);
        }
        Ok(Self { start, limit })
    }
}

fn parse_digits(s: &str) -> Result<u64, InvalidPage> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidPage);
    }
    // Leading zeros are fine (as for Python's int()); past them, more than 19 digits is out
    // of every range and would not fit a u64.
    let significant = s.trim_start_matches('0');
    if significant.len() > 19 {
        return Err(InvalidPage);
    }
    Ok(significant.parse().unwrap_or(0))
}

/// One page of rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Page<T> {
    /// The rows, oldest first.
    pub items: Vec<T>,
    /// `start + limit` when the page is full.
    pub next_start: Option<u64>,
}

impl<T> Page<T> {
    /// Builds the page for `req` from the rows found.
    pub fn new(req: PageRequest, items: Vec<T>) -> Self {
        let next_start = (items.len() as u64 == req.limit).then_some(req.start + req.limit);
        Self { items, next_start }
    }

    /// Transforms the rows, keeping the paging.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_start: self.next_start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bounds() {
        assert_eq!(
            PageRequest::parse(Some("0"), Some("1")),
            Ok(PageRequest { start: 0, limit: 1 })
        );
        assert!(PageRequest::parse(Some("999999999999999"), Some("100")).is_ok());
    }

    #[test]
    fn refuses_out_of_range_and_non_digits() {
        for (s, l) in [
            ("-1", "1"),
            ("1000000000000000", "1"),
            ("9999999999999991", "1"),
            ("0", "0"),
            ("0", "101"),
            ("0", "-1"),
            ("+1", "1"),
            (" 5", "1"),
            ("1_0", "1"),
            ("1.0", "1"),
            ("", "1"),
            ("0", "abc"),
            ("99999999999999999999999", "1"),
        ] {
            assert_eq!(
                PageRequest::parse(Some(s), Some(l)),
                Err(InvalidPage),
                "{s} {l}"
            );
        }
        assert_eq!(PageRequest::parse(None, Some("1")), Err(InvalidPage));
        assert_eq!(PageRequest::parse(Some("0"), None), Err(InvalidPage));
    }

    #[test]
    fn next_start_only_on_full_pages() {
        let req = PageRequest { start: 4, limit: 2 };
        assert_eq!(Page::new(req, vec![1, 2]).next_start, Some(6));
        assert_eq!(Page::new(req, vec![1]).next_start, None);
    }
}

/// Property tests of the paging parameters (plain digits only, `0 <= start <= MAX_START`,
/// `1 <= limit <= MAX_LIMIT`).
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

    /// The specification, written independently of `parse_digits`: a non-empty run of ASCII
    /// digits whose numeric value (leading zeros and all) lies in `lo..=hi`.
    fn spec_value(raw: &str, lo: u64, hi: u64) -> Option<u64> {
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let significant = raw.trim_start_matches('0');
        if significant.len() > 20 {
            return None; // above u64::MAX, so above any bound
        }
        let value: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().ok()?
        };
        (u128::from(lo)..=u128::from(hi))
            .contains(&value)
            .then_some(value as u64)
    }

    /// Raw query values: in-range and out-of-range numbers, leading zeros, signs, spaces,
    /// separators, exponents, non-ASCII digits and arbitrary text.
    fn raw_value() -> impl Strategy<Value = String> {
        prop_oneof![
            (0..=MAX_START).prop_map(|n| n.to_string()),
            (0..=MAX_LIMIT + 2).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<u128>().prop_map(|n| n.to_string()),
            (0usize..25, 0..=MAX_START).prop_map(|(zeros, n)| format!("{}{n}", "0".repeat(zeros))),
            (0usize..25, 0..=MAX_LIMIT).prop_map(|(zeros, n)| format!("{}{n}", "0".repeat(zeros))),
            "[0-9]{0,22}",
            "[-+ ]?[0-9]{1,4}[ _.eE]?[0-9]{0,3}[ ]?",
            // Fullwidth and Arabic-Indic digits: numeric to Unicode, not plain digits.
            "[0-9\u{ff10}-\u{ff19}\u{0660}-\u{0669}]{1,4}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// Never panics, and accepts exactly the plain-digit values in range.
        #[test]
        fn parse_agrees_with_the_specification(start in raw_value(), limit in raw_value()) {
            let expected = match (
                spec_value(&start, 0, MAX_START),
                spec_value(&limit, 1, MAX_LIMIT),
            ) {
                (Some(start), Some(limit)) => Ok(PageRequest { start, limit }),
                _ => Err(InvalidPage),
            };
            prop_assert_eq!(PageRequest::parse(Some(&start), Some(&limit)), expected);
        }

        /// Every valid pair, written as the decimal text a client sends, parses back to
        /// itself; a full page then continues at `start + limit`.
        #[test]
        fn valid_values_round_trip(start in 0..=MAX_START, limit in 1..=MAX_LIMIT) {
            let req = PageRequest::parse(Some(&start.to_string()), Some(&limit.to_string()));
            prop_assert_eq!(req, Ok(PageRequest { start, limit }));
            let full = Page::new(req.unwrap(), vec![(); limit as usize]);
            prop_assert_eq!(full.next_start, Some(start + limit));
            let short = Page::new(req.unwrap(), vec![(); limit as usize - 1]);
            prop_assert_eq!(short.next_start, None);
        }

        /// Values just outside the ranges, and missing values, are refused.
        #[test]
        fn out_of_range_or_missing_is_refused(
            big_start in MAX_START + 1..=u64::MAX,
            big_limit in MAX_LIMIT + 1..=u64::MAX,
            start in 0..=MAX_START,
            limit in 1..=MAX_LIMIT,
        ) {
            let (s, l) = (start.to_string(), limit.to_string());
            prop_assert_eq!(PageRequest::parse(Some(&big_start.to_string()), Some(&l)), Err(InvalidPage));
            prop_assert_eq!(PageRequest::parse(Some(&s), Some(&big_limit.to_string())), Err(InvalidPage));
            prop_assert_eq!(PageRequest::parse(Some(&s), Some("0")), Err(InvalidPage));
            prop_assert_eq!(PageRequest::parse(None, Some(&l)), Err(InvalidPage));
            prop_assert_eq!(PageRequest::parse(Some(&s), None), Err(InvalidPage));
            prop_assert_eq!(PageRequest::parse(Some(&format!("-{s}")), Some(&l)), Err(InvalidPage));
            prop_assert_eq!(PageRequest::parse(Some(&format!("+{s}")), Some(&l)), Err(InvalidPage));
        }
    }
}
