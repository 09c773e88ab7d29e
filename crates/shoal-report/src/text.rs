//! Text shared by the human-readable reporters: test labels and notes about
//! truncated output.

/// The label of one (test, repetition): the test name, with ` (repeat N)`
/// appended for repetitions after the first (N is the 0-based `repeat` of the
/// events), so every execution of `--repeat` has a distinct name.
pub(crate) fn test_label(test: &str, repeat: u32) -> String {
    if repeat == 0 {
        test.to_owned()
    } else {
        format!("{test} (repeat {repeat})")
    }
}

/// `[output truncated: N bytes dropped, cap 1 MiB]`; the cap part is left out
/// when it is unknown.
pub(crate) fn truncation_note(dropped: u64, cap: Option<u64>) -> String {
    match cap {
        Some(cap) => format!(
            "[output truncated: {dropped} bytes dropped, cap {}]",
            human_bytes(cap)
        ),
        None => format!("[output truncated: {dropped} bytes dropped]"),
    }
}

/// A byte count in binary units: `1 MiB`, `64 KiB`, `1.5 MiB`, `100 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size {
            return if n % size == 0 {
                format!("{} {unit}", n / size)
            } else {
                let value = n as f64 / size as f64;
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_repetitions_after_the_first() {
        assert_eq!(test_label("a::b", 0), "a::b");
        assert_eq!(test_label("a::b", 2), "a::b (repeat 2)");
    }

    #[test]
    fn human_bytes_picks_the_largest_unit() {
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(64 * 1024), "64 KiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(0), "0 B");
    }

    #[test]
    fn truncation_note_mentions_the_cap_when_known() {
        assert_eq!(
            truncation_note(42, Some(1 << 20)),
            "[output truncated: 42 bytes dropped, cap 1 MiB]"
        );
        assert_eq!(
            truncation_note(7, None),
            "[output truncated: 7 bytes dropped]"
        );
    }
}
