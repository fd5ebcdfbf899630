//! Tables as kubectl prints them: columns as wide as their widest cell, three spaces
//! apart, the last one not padded. For tables held whole (`kgate approvals list`); a
//! listing that streams (`kgate sessions list`) keeps fixed widths instead.

use std::fmt::Write as _;

/// A header and the rows under it.
pub(super) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Space between columns (kubectl's tabwriter padding).
const GAP: usize = 3;

impl Table {
    pub(super) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, extra ones are kept.
    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        let header = self.header.iter().map(|h| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        for cells in &lines {
            for (width, cell) in widths.iter_mut().zip(cells.iter()) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for cells in lines {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<0$}", width + GAP);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(vec!["NAME", "WORKLOAD", "RULE"]);
        table.row(vec!["a".into(), "demo/web-0".into(), "hold".into()]);
        table.row(vec![
            "approval-2".into(),
            "host /kgate-test-1234/some/long/cgroup".into(),
            "r".into(),
        ]);
        table.row(vec!["b".into(), String::new(), String::new()]);
        assert_eq!(
            table.render(),
            "NAME         WORKLOAD                                 RULE\n\
             a            demo/web-0                               hold\n\
             approval-2   host /kgate-test-1234/some/long/cgroup   r\n\
             b\n"
        );
    }
}
