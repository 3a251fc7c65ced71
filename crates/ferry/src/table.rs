//! Plain-text tables for listings (`ferry ps`, `ferry peers`): columns padded to their widest
//! cell, two spaces apart; the last column is not padded (it may be long).

/// The table of `header` and `rows`, one line each (each row has a cell per header).
pub fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let columns = header.len();
    let all = || std::iter::once(header.as_slice()).chain(rows.iter().map(AsRef::as_ref));
    let mut widths = vec![0usize; columns];
    for row in all() {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all() {
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column + 1 == columns {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let rows = [
            ["1".to_string(), "running".into(), "sleep 300".into()],
            ["12".to_string(), "exited".into(), "true".into()],
        ];
        assert_eq!(
            render(&["ID", "STATE", "COMMAND"], &rows),
            "ID  STATE    COMMAND\n1   running  sleep 300\n12  exited   true\n"
        );
    }
}
