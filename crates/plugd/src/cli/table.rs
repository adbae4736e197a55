//! Plain-text tables, as `plugd list`, `describe`, `hooks` and `gitlab` print them.

/// One line per row: every column but the last padded to its widest cell (counted in characters),
/// columns two spaces apart, trailing spaces trimmed.
pub(crate) fn aligned<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < N {
                    line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_by_characters() {
        let rows =
            [["név".to_owned(), "x".to_owned(), "".to_owned()], ["a".to_owned(), "long".to_owned(), "end".to_owned()]];
        assert_eq!(aligned(&rows), ["név  x", "a    long  end"]);
    }
}
