//! Scenario errors: every one names the file, and where it can, the line and column.

use std::ops::Range;

/// A problem with a scenario file or with how it is being run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    /// The file is malformed or a value is invalid; points at the offending text.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem with a run's options (for example an unknown bug flag given with `--bug`).
    #[error("{0}")]
    Options(String),
}

impl ScenarioError {
    /// An error at a byte span of `text` (1-based line and column, in characters).
    pub fn at(
        file: &str,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => line_column(text, span.start),
            None => (1, 1),
        };
        ScenarioError::Invalid {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Converts a TOML parse or type error.
    pub fn from_toml(file: &str, text: &str, error: &toml::de::Error) -> Self {
        ScenarioError::at(file, text, error.span(), error.message().trim().to_string())
    }
}

/// The 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
