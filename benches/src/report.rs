//! The results table: rows of figures and ratios, rendered as markdown, and carried from a
//! child process (one per part) to the parent that prints the whole table.

use std::fmt::Write as _;

/// Whether a row's goal was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Met,
    Missed,
    /// A figure with no goal of its own.
    Info,
}

impl Verdict {
    pub(crate) fn from_bool(met: bool) -> Self {
        if met {
            Verdict::Met
        } else {
            Verdict::Missed
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "yes",
            Verdict::Missed => "**no**",
            Verdict::Info => "",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "yes" => Verdict::Met,
            "**no**" => Verdict::Missed,
            _ => Verdict::Info,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) part: String,
    pub(crate) measure: String,
    /// Ours: the registry layer, or the figure itself when there is no baseline.
    pub(crate) ours: String,
    /// The baseline's figure, or empty.
    pub(crate) baseline: String,
    pub(crate) ratio: String,
    pub(crate) goal: String,
    pub(crate) verdict: Verdict,
}

/// The rows and closing notes of one or more parts.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

const HEADER: [&str; 7] = [
    "part", "measure", "ours", "baseline", "ratio", "goal", "met",
];

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn row(
        &mut self,
        part: &str,
        measure: impl Into<String>,
        ours: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        goal: impl Into<String>,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            part: part.to_owned(),
            measure: measure.into(),
            ours: ours.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            goal: goal.into(),
            verdict,
        });
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub(crate) fn extend(&mut self, other: Report) {
        self.rows.extend(other.rows);
        self.notes.extend(other.notes);
    }

    pub(crate) fn missed(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| row.verdict == Verdict::Missed)
            .count()
    }

    /// The markdown table, then the notes as a list.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.part,
                row.measure,
                row.ours,
                row.baseline,
                row.ratio,
                row.goal,
                row.verdict.as_str()
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// One tab-separated line per row and note, for the parent process to read back.
    pub(crate) fn to_lines(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let fields = [
                row.part.as_str(),
                &row.measure,
                &row.ours,
                &row.baseline,
                &row.ratio,
                &row.goal,
                row.verdict.as_str(),
            ];
            let _ = writeln!(out, "ROW\t{}", fields.map(clean).join("\t"));
        }
        for note in &self.notes {
            let _ = writeln!(out, "NOTE\t{}", clean(note));
        }
        out
    }

    /// Reads back what [`to_lines`](Self::to_lines) wrote; other lines are ignored.
    pub(crate) fn from_lines(text: &str) -> Report {
        let mut report = Report::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("ROW\t") {
                let f: Vec<&str> = rest.split('\t').collect();
                if let [part, measure, ours, baseline, ratio, goal, verdict] = f[..] {
                    report.row(
                        part,
                        measure,
                        ours,
                        baseline,
                        ratio,
                        goal,
                        Verdict::parse(verdict),
                    );
                }
            } else if let Some(note) = line.strip_prefix("NOTE\t") {
                report.note(note);
            }
        }
        report
    }
}

fn clean(field: &str) -> String {
    field.replace(['\t', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let mut report = Report::default();
        report.row(
            "a",
            "put p50",
            "1 ms",
            "0.9 ms",
            "1.11",
            "<= 1.05",
            Verdict::Missed,
        );
        report.row("c", "hash", "abc", "", "", "", Verdict::Info);
        report.note("why | and what");
        let back = Report::from_lines(&format!("noise\n{}", report.to_lines()));
        assert_eq!(back.to_markdown(), report.to_markdown());
        assert_eq!(back.missed(), 1);
    }
}
