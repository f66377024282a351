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
    // Plain ASCII digits; 20 digits cannot fit, and anything that long is out of range anyway.
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidPage);
    }
    s.parse().map_err(|_| InvalidPage)
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
