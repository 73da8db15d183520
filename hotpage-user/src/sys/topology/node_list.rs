//! The kernel's list format for CPUs and nodes (`0-3,8,10-11`), as printed by
//! `bitmap_print_to_pagebuf()` in list mode.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad list {text:?}: {reason}")]
pub struct ListError {
    pub text: String,
    pub reason: &'static str,
}

/// Parses `0-3,8` into `[0, 1, 2, 3, 8]`. An empty string is an empty list.
pub fn parse_list(text: &str) -> Result<Vec<u32>, ListError> {
    let err = |reason| ListError { text: text.to_owned(), reason };
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        let lo: u32 = lo.trim().parse().map_err(|_| err("not a number"))?;
        let hi: u32 = hi.trim().parse().map_err(|_| err("not a number"))?;
        if hi < lo {
            return Err(err("range runs backwards"));
        }
        if hi - lo > 1 << 20 {
            return Err(err("range too large"));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles() {
        assert_eq!(parse_list("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list("1").unwrap(), vec![1]);
        assert_eq!(parse_list("\n").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_list("a-b").is_err());
        assert!(parse_list("3-1").is_err());
    }
}
